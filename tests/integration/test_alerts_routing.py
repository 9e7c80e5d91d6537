"""Routing and inhibition of the generated Alertmanager config, in a real Alertmanager:
alerts are posted to its API as Prometheus and the watcher post them, and the
notifications are read where they land (HTTP receiver, SMTP server on 127.0.0.1)."""

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from hubkeeper.deploy.stack import Stack, wait_for
from tests.integration.alerting import (
    Inbox,
    Receiver,
    alertmanager_alerts,
    alerts_section,
    http_receiver,
    smtp_server,
)

pytestmark = pytest.mark.beside  # runs beside the main lane (tests/run)

PAGER_KEY, RESEARCH_KEY = "platform-routing-key", "research-routing-key"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from http_receiver()


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    yield from smtp_server()


@pytest.fixture
def alertmanager(tmp_path: Path, receiver: Receiver, inbox: tuple[Inbox, int]) -> Iterator[Stack]:
    """Only the stack's Alertmanager, with the config rendered from ``[alerts]``."""
    (tmp_path / "pager.key").write_text(PAGER_KEY)
    (tmp_path / "research.key").write_text(RESEARCH_KEY)
    alerts = alerts_section(receiver, inbox[1], str(tmp_path / "pager.key"))
    alerts["teams"] = [
        {"name": "logging", "warnings": {"webhook_url": f"{receiver.url}/logging-warnings"}},
        {
            "name": "research",
            "pager": {
                "pagerduty_routing_key_file": str(tmp_path / "research.key"),
                "pagerduty_url": f"{receiver.url}/research-pager",
            },
        },
    ]
    stack = Stack(tmp_path / "stack", prometheus=True, overrides={"alerts": alerts})
    try:
        stack.write_config()
        stack.start_alertmanager()
        yield stack
    finally:
        stack.down()


def alert(alertname: str, severity: str, **labels: str) -> dict:
    return {
        "labels": {"alertname": alertname, "severity": severity, **labels},
        "annotations": {
            "summary": f"{alertname} summary",
            "description": f"{alertname} description",
            "runbook_url": f"alerts/runbooks/{alertname}.md",
        },
        "startsAt": datetime.now(UTC).isoformat(),
    }


OOM = {"team": "platform", "instance": "127.0.0.1:9102", "name": "jupyter-alice"}
POSTED = [
    alert("JupyterHubDown", "critical", team="platform", hub="a"),
    alert("JupyterHubSpawnFailureRatio", "critical", team="platform", hub="a"),  # inhibited
    alert("JupyterHubSpawnFailureRatio", "critical", team="platform", hub="b"),
    alert("JupyterHubUnreachableThroughNginx", "critical", team="platform"),  # inhibited
    alert("UserServerOOMKilled", "critical", **OOM),
    alert("UserServerOOMKilled", "warning", **OOM),  # inhibited by its critical form
    alert("HubkeeperOrphanContainers", "warning", team="platform"),
    alert("HubkeeperShipperLagging", "warning", team="logging"),
    alert("HubkeeperShipperOutputDown", "critical", team="logging"),
    alert("ResearchQuotaExceeded", "critical", team="research"),
    alert("HubkeeperFenceFailed", "critical", hub="a", **{"from": "b"}),  # the watcher's
    alert("HubkeeperStorageHung", "critical", team="platform", node="n1", mount="notebooks"),
    alert("HubkeeperSpawnCanaryFailed", "critical", team="platform", hub="b"),  # inhibited
    alert("Watchdog", "warning", team="platform"),
]


def arrives(received: Callable[[], set], expected: set, timeout: float = 30) -> None:
    """Until ``received()`` is ``expected``; on timeout, the assertion shows what came."""
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: received() == expected, timeout, str(expected))
    assert received() == expected


def test_each_severity_and_team_reaches_its_receiver_and_inhibited_alerts_do_not(
    alertmanager: Stack, receiver: Receiver, inbox: tuple[Inbox, int]
) -> None:
    url = alertmanager.alertmanager_url
    requests.post(f"{url}/api/v2/alerts", json=POSTED, timeout=5).raise_for_status()

    def paged(path: str) -> set[tuple[str, str]]:
        events = receiver.posted(path, lambda body: body["event_action"] == "trigger")
        return {(e["payload"]["class"], e["payload"].get("component", "")) for e in events}

    def webhook(path: str) -> set[str]:
        return {a["labels"]["alertname"] for body in receiver.posted(path) for a in body["alerts"]}

    expected_pages = {
        ("JupyterHubDown", "a"),
        ("JupyterHubSpawnFailureRatio", "b"),
        ("UserServerOOMKilled", ""),
        ("HubkeeperShipperOutputDown", ""),
        ("HubkeeperFenceFailed", "a"),
        ("HubkeeperStorageHung", ""),
    }
    arrives(lambda: paged("/pagerduty"), expected_pages)
    arrives(lambda: paged("/research-pager"), {("ResearchQuotaExceeded", "")})
    arrives(lambda: webhook("/warnings"), {"HubkeeperOrphanContainers"})
    arrives(lambda: webhook("/logging-warnings"), {"HubkeeperShipperLagging"})
    arrives(lambda: webhook("/watchdog"), {"Watchdog"})
    wait_for(lambda: len(inbox[0].mails) == len(expected_pages), 20, "one e-mail per page")

    # routing keys come from each receiver's file
    assert {e["routing_key"] for e in receiver.posted("/pagerduty")} == {PAGER_KEY}
    assert {e["routing_key"] for e in receiver.posted("/research-pager")} == {RESEARCH_KEY}
    subjects = sorted(mail.subject for mail in inbox[0].mails)
    assert "[FIRING:1] JupyterHubDown hub=a (critical): JupyterHubDown summary" in subjects
    assert all(mail.recipients == ["oncall@lab.test"] for mail in inbox[0].mails)

    # what was held back is held as inhibited, not lost
    for name, count in (
        ("JupyterHubSpawnFailureRatio", 1),
        ("JupyterHubUnreachableThroughNginx", 1),
        ("UserServerOOMKilled", 1),
        ("HubkeeperSpawnCanaryFailed", 1),  # by the storage outage, not the hub
    ):
        held = alertmanager_alerts(url, name)
        assert len([a for a in held if a["status"]["inhibitedBy"]]) == count, held
    time.sleep(3 * alertmanager.config.alerts.group_interval)  # nothing else arrives
    assert paged("/pagerduty") == expected_pages
    assert webhook("/warnings") == {"HubkeeperOrphanContainers"}
    assert len(inbox[0].mails) == len(expected_pages)
