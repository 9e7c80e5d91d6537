"""Log lines into ECS documents."""

import time

import pytest

from shippers.parsers import Clock, fold, is_continuation, make_parser, normalize_timestamp

HUB = "[I 2026-11-25 17:16:10.046 JupyterHub log:192] "


def parse(parser: str, line: str) -> dict | None:
    return make_parser(parser, "UTC").parse(line)


def test_jupyterhub_request_line() -> None:
    doc = parse(
        "jupyterhub", HUB + "200 GET /hub/api/users?offset=0&limit=50 (operator@127.0.0.1) 22.29ms"
    )
    assert doc == {
        "@timestamp": "2026-11-25T17:16:10.046Z",
        "log.level": "info",
        "log.logger": "JupyterHub",
        "log.origin.file.name": "log",
        "log.origin.file.line": 192,
        "message": "200 GET /hub/api/users?offset=0&limit=50 (operator@127.0.0.1) 22.29ms",
        "http.response.status_code": 200,
        "http.request.method": "GET",
        "url.original": "/hub/api/users?offset=0&limit=50",
        "url.path": "/hub/api/users",
        "url.query": "offset=0&limit=50",
        "user.name": "operator",
        "client.ip": "127.0.0.1",
        "event.duration": 22_290_000,
        "event.dataset": "jupyterhub",
    }


def test_redirect_and_anonymous_request_lines() -> None:
    doc = parse(
        "jupyterhub", HUB + "302 GET /nginx-generation -> /hub/nginx-generation (@127.0.0.1) 0.69ms"
    )
    assert doc["url.path"] == "/nginx-generation" and "user.name" not in doc
    assert doc["event.duration"] == 690_000


@pytest.mark.parametrize(
    ("message", "action", "duration"),
    [
        ("User alice took 2.110 seconds to start", "spawn", 2_110_000_000),
        ("User alice server took 0.717 seconds to stop", "stop", 717_000_000),
        (
            "Error starting alice's server: HTTP 400: Bad Request (Image x not allowed)",
            "spawn-failed",
            None,
        ),
        ("Unhandled error starting alice's server: boom", "spawn-failed", None),
        ("User logged in: alice", "login", None),
    ],
)
def test_spawn_stop_and_login_lines(message: str, action: str, duration: int | None) -> None:
    doc = parse("jupyterhub", HUB + message)
    assert (doc["event.action"], doc["user.name"], doc.get("event.duration")) == (
        action, "alice", duration,
    )  # fmt: skip


def test_a_spawn_failure_keeps_its_reason_as_a_keyword() -> None:
    doc = parse(
        "jupyterhub", HUB + "Error starting alice's server: HTTP 400: Bad Request " + "x" * 300
    )
    assert doc["labels.spawn_failure"] == ("HTTP 400: Bad Request " + "x" * 300)[:200]


@pytest.mark.parametrize(
    ("message", "code"),
    [  # the hub finds a server dead: on a request (base.py), at start-up (app.py)
        ("User alice server stopped, with exit code: ExitCode=137, Error='', "
         "FinishedAt=2026-11-25T19:00:00.1Z", 137),
        ("User alice server stopped with exit code: 1", 1),
        ("User alice server stopped with exit code: unknown", None),
        ("alice appears to have stopped while the Hub was down", None),
        ("alice:gpu appears to have stopped while the Hub was down", None),
    ],
)  # fmt: skip
def test_servers_found_stopped_with_their_exit_code(message: str, code: int | None) -> None:
    doc = parse("jupyterhub", HUB + message)
    assert (doc["event.action"], doc["user.name"]) == ("server-exited", "alice")
    assert doc.get("process.exit_code") == code and "event.duration" not in doc


def test_jupyter_server_lines_have_no_module() -> None:
    doc = parse("jupyterhub", "[W 2026-11-25 17:33:58.807 JupyterHubSingleUser] No default url")
    assert (doc["log.level"], doc["log.logger"], doc["message"]) == (
        "warning", "JupyterHubSingleUser", "No default url",
    )  # fmt: skip
    assert "log.origin.file.name" not in doc


def test_chp_lines_lose_their_colours() -> None:
    doc = parse(
        "jupyterhub",
        "2026-11-25T17:16:10.033Z [ConfigProxy] \x1b[32minfo\x1b[39m: "
        "201 POST /api/routes/user/alice ",
    )
    assert doc == {
        "@timestamp": "2026-11-25T17:16:10.033Z",
        "log.level": "info",
        "log.logger": "ConfigProxy",
        "message": "201 POST /api/routes/user/alice",
        "http.response.status_code": 201,
        "http.request.method": "POST",
        "url.original": "/api/routes/user/alice",
        "url.path": "/api/routes/user/alice",
        "event.dataset": "proxy",
    }


def test_chp_time_only_lines_get_the_date() -> None:
    clock = Clock("UTC")
    noon = 1795608000.0  # 2026-11-25 12:00:00 UTC
    assert clock.complete("11:59:58.100", now=noon) == "2026-11-25T11:59:58.100Z"
    # a line from just before midnight read just after it belongs to the day before
    assert clock.complete("23:59:59.900", now=noon - 12 * 3600 + 5) == "2026-11-24T23:59:59.900Z"
    doc = parse(
        "chp", "17:16:10.033 [ConfigProxy] \x1b[31merror\x1b[39m: 503 GET /user/x/ socket hang up"
    )
    assert doc["@timestamp"][10:] == "T17:16:10.033Z" and doc["log.level"] == "error"


def test_local_time_zones_convert_to_utc() -> None:
    assert Clock("Europe/Berlin").iso_text("2026-11-25 17:16:10.046") == "2026-11-25T16:16:10.046Z"
    assert Clock("Europe/Berlin").iso_text("2026-07-01 12:00:00") == "2026-07-01T10:00:00.000Z"


def test_nginx_access_combined() -> None:
    line = (
        '127.0.0.1 - bob [25/Nov/2026:18:16:07 +0100] "GET /hub/api?token=abc HTTP/1.1" 200 20 '
        '"http://x/" "python-requests/2.34.2"'
    )
    doc = parse("nginx_access", line)
    assert doc["@timestamp"] == "2026-11-25T17:16:07.000Z"
    assert (doc["client.ip"], doc["user.name"], doc["http.request.method"]) == (
        "127.0.0.1",
        "bob",
        "GET",
    )
    assert (doc["url.path"], doc["url.query"], doc["http.version"]) == (
        "/hub/api",
        "token=abc",
        "1.1",
    )
    assert (doc["http.response.status_code"], doc["http.response.body.bytes"]) == (200, 20)
    assert doc["http.request.referrer"] == "http://x/"
    assert doc["user_agent.original"] == "python-requests/2.34.2"
    junk = parse(
        "nginx_access",
        '127.0.0.1 - - [25/Nov/2026:18:16:07 +0000] "\\x16\\x03\\x01" 400 150 "-" "-"',
    )
    assert junk["url.original"] == "\\x16\\x03\\x01" and "http.request.method" not in junk


def test_nginx_error() -> None:
    line = (
        "2026/11/25 17:16:07 [error] 26058#26058: *5 connect() failed (111: Connection refused) "
        'while connecting to upstream, client: 127.0.0.1, server: , request: "GET /hub/ HTTP/1.1", '
        'upstream: "http://127.0.0.1:8001/hub/", host: "127.0.0.1:8000"'
    )
    doc = parse("nginx_error", line)
    assert (doc["@timestamp"], doc["log.level"]) == ("2026-11-25T17:16:07.000Z", "error")
    assert (doc["process.pid"], doc["nginx.error.connection_id"]) == (26058, 5)
    assert (doc["client.ip"], doc["http.request.method"], doc["url.path"]) == (
        "127.0.0.1",
        "GET",
        "/hub/",
    )
    assert doc["nginx.error.upstream"] == "http://127.0.0.1:8001/hub/"
    notice = parse(
        "nginx_error", '2026/11/25 17:16:07 [notice] 26058#26058: using the "epoll" event method'
    )
    assert notice["log.level"] == "notice" and "nginx.error.connection_id" not in notice


def test_json_lines_structlog_and_others() -> None:
    own = parse(
        "json",
        '{"port": 9104, "event": "daemon_started", "level": "info", "logger": "hubkeeper.daemon", '
        '"timestamp": "2026-11-25T17:23:18.572995Z"}',
    )
    assert own == {
        "@timestamp": "2026-11-25T17:23:18.573Z",
        "message": "daemon_started",
        "event.action": "daemon_started",
        "log.level": "info",
        "log.logger": "hubkeeper.daemon",
        "json": {"port": 9104},
    }
    other = parse("json", '{"time": 1795608000.5, "msg": "hi", "severity": "WARN", "x": {"y": 1}}')
    assert "event.action" not in other  # only structlog's "event" names an action
    assert (other["@timestamp"], other["log.level"], other["json"]) == (
        "2026-11-25T12:00:00.500Z", "warning", {"x": {"y": 1}},
    )  # fmt: skip
    assert parse("json", "[1, 2]") is None and parse("json", "{broken") is None


@pytest.mark.parametrize("parser", ["jupyterhub", "chp", "nginx_access", "nginx_error", "json"])
def test_unknown_lines_are_not_claimed(parser: str) -> None:
    assert parse(parser, "hello world") is None
    assert parse("raw", "hello world") == {"message": "hello world"}


def test_auto_tries_every_format() -> None:
    assert parse("auto", '{"message": "m"}')["message"] == "m"
    assert parse("auto", HUB + "x")["event.dataset"] == "jupyterhub"
    assert parse("auto", "2026/11/25 17:16:07 [warn] 1#1: w")["event.dataset"] == "nginx.error"


def test_tracebacks_fold_into_the_event() -> None:
    doc = {"message": "Couldn't parse JSON"}
    lines = [
        "    Traceback (most recent call last):",
        '      File "x.py", line 1, in <module>',
        "    json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)",
        "",
    ]
    assert all(is_continuation(line) for line in lines)
    fold(doc, lines)
    assert doc["error.stack_trace"] == "\n".join(lines[:3])
    assert doc["error.type"] == "json.decoder.JSONDecodeError"
    assert doc["error.message"] == "Expecting value: line 1 column 1 (char 0)"
    assert doc["message"] == "Couldn't parse JSON"


def test_other_continuations_extend_the_message() -> None:
    doc = {"message": "{"}
    fold(doc, ['  "Host": "x"', "}"])
    assert doc["message"] == '{\n  "Host": "x"\n}' and "error.stack_trace" not in doc
    assert not is_continuation("plain text") and not is_continuation(HUB + "x")


def test_timestamps_normalize() -> None:
    assert normalize_timestamp("2026-11-25T17:23:18+01:00") == "2026-11-25T16:23:18.000Z"
    assert normalize_timestamp(1795608000123) == "2026-11-25T12:00:00.123Z"
    assert normalize_timestamp("yesterday") is None and normalize_timestamp(True) is None


def test_parsing_is_fast_enough() -> None:
    """A cheap guard against accidental slowness (the benchmark measures properly)."""
    parser = make_parser("jupyterhub", "UTC")
    line = HUB + "200 GET /hub/api/users/alice (operator@127.0.0.1) 7.62ms"
    started = time.process_time()
    for _ in range(20000):
        parser.parse(line)
    assert time.process_time() - started < 2.0
