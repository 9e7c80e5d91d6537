import json
import logging
import socket
import struct
import threading
import time
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from hubkeeper import hubapi, log
from hubkeeper.config import HubClientConfig, Secret
from hubkeeper.hubapi import PAGINATION_MEDIA_TYPE, HubAPIError, HubClient, HubUnavailable

TOKEN = "tok-SENTINEL-8c1f0e2d9b"
WRONG_HOST = "http://127.0.0.1:1"  # what next.url would carry behind a proxy; nothing listens


class FakeHub:
    """Enough of JupyterHub's REST API, on 127.0.0.1, with failures on demand.

    ``failures`` is consumed one per request: "500"/"503" answer that status, "429"
    answers with ``Retry-After: retry_after``, "reset" resets the connection, "sleep"
    stalls for ``stall`` seconds without answering.
    """

    def __init__(self, users: int = 250, max_limit: int = 200, paginated: bool = True) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        for i in range(users):
            self.add_user(f"user{i:03d}")
        self.max_limit = max_limit
        self.paginated = paginated
        self.failures: list[str] = []
        self.retry_after = "0"
        self.stall = 1.0
        self.requests: list[tuple[str, str]] = []
        self.authorizations: list[str | None] = []
        self.accepts: list[str | None] = []
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hub.handle(self)

            do_POST = do_DELETE = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda request, address: None  # broken pipes after stalls
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_user(self, name: str) -> None:
        self.users[name] = {"name": name, "kind": "user", "servers": {}}

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p in self.requests if m == method and urlsplit(p).path == path)

    # --- request handling ------------------------------------------------------------

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        with self.lock:
            self.requests.append((request.command, request.path))
            self.authorizations.append(request.headers.get("Authorization"))
            self.accepts.append(request.headers.get("Accept"))
            failure = self.failures.pop(0) if self.failures else None
        if failure == "reset":
            linger = struct.pack("ii", 1, 0)
            request.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            request.connection.close()
            return
        if failure == "sleep":
            time.sleep(self.stall)
            return
        if failure is not None:
            headers = {"Retry-After": self.retry_after} if failure == "429" else {}
            self.reply(request, int(failure), {"status": int(failure), "message": "busy"}, headers)
            return
        if request.headers.get("Authorization") != f"token {TOKEN}":
            self.reply(request, 403, {"status": 403, "message": "Forbidden"})
            return
        parts = urlsplit(request.path)
        segments = [unquote(s) for s in parts.path.removeprefix("/hub/api").split("/") if s]
        length = int(request.headers.get("Content-Length") or 0)
        body = json.loads(request.rfile.read(length)) if length else None
        self.route(request, segments, parse_qs(parts.query), body)

    def route(
        self, request: BaseHTTPRequestHandler, segments: list[str], query: dict, body: Any
    ) -> None:
        method = request.command
        if method == "GET" and segments == []:
            return self.reply(request, 200, {"version": "5.2.1"})
        if method == "GET" and segments == ["user"]:
            return self.reply(request, 200, {"name": "hubkeeper", "kind": "service"})
        if segments == ["users"] and method == "GET":
            return self.list_users(request, query)
        if segments == ["users"] and method == "POST":
            new = [name for name in body["usernames"] if name not in self.users]
            if not new:
                return self.reply(request, 409, {"status": 409, "message": "All exist"})
            for name in new:
                self.add_user(name)
            return self.reply(request, 201, [self.users[name] for name in new])
        user = self.users.get(segments[1]) if len(segments) > 1 else None
        if user is None:
            return self.reply(request, 404, {"status": 404, "message": "No such user"})
        if len(segments) == 2:
            if method == "DELETE":
                del self.users[user["name"]]
                return self.reply(request, 204, None)
            return self.reply(request, 200, user)
        server_name = segments[3] if segments[2] == "servers" else ""
        if method == "POST":
            if server_name in user["servers"]:
                return self.reply(request, 400, {"status": 400, "message": "already running"})
            user["servers"][server_name] = {"name": server_name, "user_options": body or {}}
            return self.reply(request, 202, None)
        user["servers"].pop(server_name, None)
        return self.reply(request, 204, None)

    def list_users(self, request: BaseHTTPRequestHandler, query: dict) -> None:
        models = sorted(self.users.values(), key=lambda u: u["name"])
        if not self.paginated or request.headers.get("Accept") != PAGINATION_MEDIA_TYPE:
            return self.reply(request, 200, models)
        offset = int(query.get("offset", ["0"])[0])
        limit = min(int(query.get("limit", ["50"])[0]), self.max_limit)
        items = models[offset : offset + limit]
        following = offset + limit
        next_page = None
        if following < len(models):
            url = f"{WRONG_HOST}/hub/api/users?offset={following}&limit={limit}"
            next_page = {"offset": following, "limit": limit, "url": url}
        pagination = {"offset": offset, "limit": limit, "total": len(models), "next": next_page}
        return self.reply(request, 200, {"items": items, "_pagination": pagination})

    @staticmethod
    def reply(
        request: BaseHTTPRequestHandler,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(body)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    fake = FakeHub()
    yield fake
    fake.close()


def client_for(url: str, **overrides: Any) -> HubClient:
    settings: dict[str, Any] = {
        "url": url,
        "token": Secret(TOKEN),
        "timeout": 2.0,
        "retries": 3,
        "backoff": 0.01,
        "backoff_max": 0.05,
        "page_size": 50,
    }
    return HubClient(HubClientConfig(**{**settings, **overrides}))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- paging ------------------------------------------------------------------------------


def test_paging_returns_each_user_exactly_once(hub: FakeHub) -> None:
    names = [user["name"] for user in client_for(hub.url).users()]
    assert names == sorted(hub.users) and len(names) == 250
    offsets = [parse_qs(urlsplit(path).query)["offset"][0] for _, path in hub.requests]
    assert offsets == ["0", "50", "100", "150", "200"]  # all here; next.url never followed
    assert set(hub.accepts) == {PAGINATION_MEDIA_TYPE}


def test_paging_when_the_hub_caps_the_page_size(hub: FakeHub) -> None:
    hub.max_limit = 40
    names = [user["name"] for user in client_for(hub.url, page_size=100).users()]
    assert names == sorted(hub.users)
    assert hub.count("GET", "/hub/api/users") == 7  # 40 at a time


def test_old_hub_answering_a_plain_list_is_read_once(hub: FakeHub) -> None:
    hub.paginated = False
    assert len(list(client_for(hub.url).users())) == 250
    assert hub.count("GET", "/hub/api/users") == 1


def test_paginate_passes_extra_parameters(hub: FakeHub) -> None:
    list(client_for(hub.url).paginate("/users", {"state": "active"}))
    assert all(parse_qs(urlsplit(p).query)["state"] == ["active"] for _, p in hub.requests)


# --- convenience calls -------------------------------------------------------------------


def test_convenience_calls(hub: FakeHub) -> None:
    client = client_for(hub.url)
    assert client.version() == "5.2.1"
    assert client.whoami()["kind"] == "service"
    created = client.create_users(["ann", "b.o b"])
    assert [user["name"] for user in created] == ["ann", "b.o b"]
    assert client.user("b.o b")["name"] == "b.o b"
    assert client.start_server("ann", options={"image": "x"}) is None
    client.start_server("ann", "gpu")
    assert hub.users["ann"]["servers"] == {
        "": {"name": "", "user_options": {"image": "x"}},
        "gpu": {"name": "gpu", "user_options": {}},
    }
    client.stop_server("ann", "gpu")
    client.stop_server("ann")
    assert hub.users["ann"]["servers"] == {}
    client.delete_user("b.o b")
    assert "b.o b" not in hub.users
    assert set(hub.authorizations) == {f"token {TOKEN}"}


def test_client_error_is_raised_at_once(hub: FakeHub) -> None:
    client = client_for(hub.url)
    with pytest.raises(HubAPIError) as error:
        client.user("nobody")
    assert not isinstance(error.value, HubUnavailable)
    assert (error.value.status, error.value.method) == (404, "GET")
    assert error.value.message == "No such user"
    assert str(error.value) == "GET /users/nobody: 404: No such user"
    assert len(hub.requests) == 1


# --- retries -----------------------------------------------------------------------------


def test_retries_then_success(hub: FakeHub, json_logs) -> None:
    hub.failures = ["503", "429", "reset", "sleep", "500"]
    hub.stall = 0.5
    client = client_for(hub.url, retries=5, timeout=0.2)
    assert client.user("user001")["name"] == "user001"
    assert len(hub.requests) == 6
    retries = [e for e in json_logs() if e["event"] == "hub api retry"]
    assert [e["attempt"] for e in retries] == [1, 2, 3, 4, 5]
    assert [e["reason"] for e in retries] == [
        "HTTP 503",
        "HTTP 429",
        "ConnectionError",
        "ReadTimeout",
        "HTTP 500",
    ]
    assert {(e["method"], e["path"], e["level"]) for e in retries} == {
        ("GET", "/users/user001", "warning")
    }


def test_retries_exhausted_raise_hub_unavailable(hub: FakeHub) -> None:
    hub.failures = ["503"] * 10
    with pytest.raises(HubUnavailable) as error:
        client_for(hub.url, retries=2).user("user001")
    assert error.value.status == 503
    assert str(error.value) == "GET /users/user001: 503: HTTP 503 after 3 attempt(s)"
    assert len(hub.requests) == 3


def test_connection_refused_is_unavailable_without_status() -> None:
    client = client_for(f"http://127.0.0.1:{closed_port()}", retries=1)
    with pytest.raises(HubUnavailable) as error:
        client.request("GET", "/users", params={"token": "in-the-query"})
    assert error.value.status is None
    assert str(error.value) == (
        "GET /users?token=***: no response: ConnectionError after 2 attempt(s)"
    )


def test_retry_after_is_honoured_up_to_backoff_max(hub: FakeHub) -> None:
    hub.failures, hub.retry_after = ["429"], "0.3"
    started = time.monotonic()
    client_for(hub.url, backoff_max=5.0).version()
    assert time.monotonic() - started >= 0.3

    hub.failures, hub.retry_after = ["429"], "3600"
    started = time.monotonic()
    client_for(hub.url, backoff_max=0.05).version()
    assert time.monotonic() - started < 1


def test_backoff_is_exponential_with_full_jitter_and_capped(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    delays: list[float] = []
    monkeypatch.setattr(hubapi.time, "sleep", delays.append)
    hub.failures = ["503"] * 6
    client_for(hub.url, retries=6, backoff=1.0, backoff_max=4.0).version()
    ceilings = [1, 2, 4, 4, 4, 4]
    assert len(delays) == 6
    assert all(0 <= delay <= ceiling for delay, ceiling in zip(delays, ceilings, strict=True))


# --- the token never leaks ---------------------------------------------------------------


def test_token_never_appears_in_logs_errors_or_tracebacks(
    hub: FakeHub, json_logs, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    logger = log.get_logger("test")
    hub.stall = 0.4
    quick = {"retries": 1, "timeout": 0.15}
    failing = {
        "timeouts": (client_for(hub.url, **quick), ["sleep", "sleep"]),
        "refused": (client_for(f"http://127.0.0.1:{closed_port()}", **quick), []),
        "http 500": (client_for(hub.url, **quick), ["500", "500"]),
        "reset": (client_for(hub.url, **quick), ["reset", "reset"]),
        "http 403": (client_for(hub.url, token=Secret(TOKEN + "x"), **quick), []),
    }
    texts = []
    for scenario, (client, failures) in failing.items():
        hub.failures = failures
        with pytest.raises(HubAPIError) as error:
            list(client.users())
        exc = error.value
        assert exc.__cause__ is None and exc.__context__ is None, scenario
        for frame, _ in traceback.walk_tb(exc.__traceback__):  # as Sentry & co. show locals
            texts += [repr(value) for value in frame.f_locals.values()]
        texts += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
        logger.error("hub call failed", scenario=scenario, error=exc, exc_info=exc)

    assert any(a and TOKEN in a for a in hub.authorizations)  # the token was really sent
    captured = capsys.readouterr()
    assert "hub api retry" in captured.out and "Traceback" in captured.out
    assert "Starting new HTTP connection" in captured.out  # urllib3's debug lines too
    everything = "\n".join([*texts, captured.out, captured.err, caplog.text])
    assert TOKEN not in everything


def test_an_unanswered_stop_is_not_sent_again_when_asked(hub: FakeHub) -> None:
    hub.add_user("ann")
    hub.stall = 0.5
    client = client_for(hub.url, timeout=0.2)
    hub.failures = ["sleep"]
    with pytest.raises(hubapi.HubNoAnswer):
        client.stop_server("ann", resend=False)
    assert hub.count("DELETE", "/hub/api/users/ann/server") == 1
    hub.failures = ["sleep"]
    assert client.stop_server("ann") is True  # by default, sent again and answered
    assert hub.count("DELETE", "/hub/api/users/ann/server") == 3
