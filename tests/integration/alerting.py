"""Where the alerting tests' notifications land: an SMTP server (aiosmtpd) and an HTTP
receiver, both on 127.0.0.1. They are the receivers, not stand-ins for a component."""

import email
import email.policy
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests
from aiosmtpd.controller import Controller

from hubkeeper.deploy.stack import free_ports, wait_for


@dataclass
class Mail:
    at: float
    recipients: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        return self.message.get_body(preferencelist=("plain",)).get_content()


class Inbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.mails: list[Mail] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.mails.append(Mail(time.time(), list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 OK"

    def matching(self, prefix: str) -> list[Mail]:
        return [mail for mail in self.mails if mail.subject.startswith(prefix)]


@dataclass
class Request:
    at: float
    path: str
    body: dict


@dataclass(frozen=True)
class Notification:
    """One alert of an Alertmanager webhook notification, as received."""

    at: float
    path: str
    receiver: str  # Alertmanager's receiver name
    alertname: str
    status: str  # firing or resolved
    labels: dict[str, str]


class Receiver(ThreadingHTTPServer):
    """Records every JSON POST (PagerDuty Events v2, Alertmanager webhooks) by path."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.refused: set[str] = set()  # paths answered 400 (a receiver that rejects)
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def posted(self, path: str, match: Callable[[dict], bool] = lambda _: True) -> list[dict]:
        return [r.body for r in self.requests if r.path == path and match(r.body)]

    def notifications(self, path: str | None = None) -> list[Notification]:
        """Every alert of every Alertmanager webhook notification (payload version 4: one
        POST per group, each alert with its own status), in the order received; ``path``
        keeps one receiver's. The books of which alert reached on-call, and when."""
        return [
            Notification(request.at, request.path, request.body.get("receiver", ""),
                         alert["labels"].get("alertname", ""), alert["status"], alert["labels"])
            for request in self.requests
            if request.body.get("version") == "4" and path in (None, request.path)
            for alert in request.body.get("alerts", [])
        ]  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path in self.server.refused:
            self.send_response(400)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.server.requests.append(Request(time.time(), self.path, body))
        answer = b'{"status": "success", "message": "Event processed"}'
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def smtp_server() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on a free 127.0.0.1 port (generator for a fixture)."""
    inbox = Inbox()
    (port,) = free_ports(1)
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def http_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.shutdown()
        receiver.server_close()
        thread.join(5)


def alerts_section(receiver: Receiver, smtp_port: int, routing_key_file: str) -> dict:
    """``[alerts]`` receivers: PagerDuty (to ``receiver``) and e-mail page, a webhook warns."""
    return {
        "runbook_base_url": "https://runbooks.lab.test/hubkeeper",
        "watchdog_url": f"{receiver.url}/watchdog",
        "smtp": {
            "smarthost": f"127.0.0.1:{smtp_port}",
            "sender": "hubkeeper@lab.test",
            "require_tls": False,
        },
        "pager": {
            "pagerduty_routing_key_file": routing_key_file,
            "pagerduty_url": f"{receiver.url}/pagerduty",
            "email_to": ["oncall@lab.test"],
        },
        "warnings": {"webhook_url": f"{receiver.url}/warnings"},
    }


def webhooks_section(receiver: Receiver) -> dict:
    """``[alerts]`` receivers that all post Alertmanager webhooks to ``receiver``: pages to
    /pager, warnings to /warnings, the Watchdog to /watchdog (see ``notifications``)."""
    return {
        "runbook_base_url": "https://runbooks.lab.test/hubkeeper",
        "watchdog_url": f"{receiver.url}/watchdog",
        "pager": {"webhook_url": f"{receiver.url}/pager"},
        "warnings": {"webhook_url": f"{receiver.url}/warnings"},
    }


def pagerduty_events(receiver: Receiver, alertname: str, action: str) -> list[dict]:
    """PagerDuty Events v2 bodies Alertmanager sent for ``alertname`` (trigger/resolve)."""
    return receiver.posted(
        "/pagerduty",
        lambda body: (
            body.get("event_action") == action and body.get("payload", {}).get("class") == alertname
        ),
    )


def wait_for_one(found: Callable[[], list], timeout: float, what: str) -> Any:
    wait_for(lambda: bool(found()), timeout, what, interval=0.25)
    return found()[0]


def prometheus_query(url: str, query: str) -> list[dict]:
    response = requests.get(f"{url}/api/v1/query", params={"query": query}, timeout=5)
    response.raise_for_status()
    return response.json()["data"]["result"]


def prometheus_alerts(url: str, name: str, state: str = "firing") -> list[dict]:
    response = requests.get(f"{url}/api/v1/alerts", timeout=5)
    response.raise_for_status()
    return [
        alert
        for alert in response.json()["data"]["alerts"]
        if alert["labels"]["alertname"] == name and alert["state"] == state
    ]


def alertmanager_alerts(url: str, name: str) -> list[dict]:
    """Every alert Alertmanager holds under ``name``, with its status (incl. inhibited)."""
    response = requests.get(
        f"{url}/api/v2/alerts",
        params={"filter": f'alertname="{name}"', "inhibited": "true", "silenced": "true"},
        timeout=5,
    )
    response.raise_for_status()
    return response.json()
