"""Log lines into ECS documents."""

import json
import time

import pytest

from hubkeeper.shippers.parsers import (
    Clock,
    Unparsable,
    fold,
    http_fields,
    hub_event,
    is_continuation,
    make_parser,
    normalize_timestamp,
)

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


def hub(module: str, message: str, lvl: str = "I") -> str:
    """A line as JupyterHub 5/6 logs it: DockerSpawner's and tornado's records carry the
    hub's logger name and their own module."""
    return f"[{lvl} 2026-11-25 17:16:10.046 JupyterHub {module}] {message}"


CONTAINER_ID = "3f2a1b9c0d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4"


SPAWNER_LINES = [
    # DockerSpawner 13/14 (dockerspawner.py): object_type "container", 7 characters of id
    (hub("dockerspawner:1318", "Created container jupyter-alice (id: 3f2a1b9) from image "
                               "hubkeeper/singleuser:4c1d"),
     {"event.action": "container-created", "container.name": "jupyter-alice",
      "container.id": "3f2a1b9", "container.image.name": "hubkeeper/singleuser:4c1d"}),
    (hub("dockerspawner:1327", "Found existing container jupyter-alice (id: 3f2a1b9)"),
     {"event.action": "container-found", "container.name": "jupyter-alice",
      "container.id": "3f2a1b9"}),
    (hub("dockerspawner:1342", "Starting container jupyter-alice (id: 3f2a1b9)"),
     {"event.action": "container-starting", "container.name": "jupyter-alice",
      "container.id": "3f2a1b9"}),
    (hub("dockerspawner:1431", "Stopping container jupyter-alice (id: 3f2a1b9)"),
     {"event.action": "container-stopping", "container.name": "jupyter-alice",
      "container.id": "3f2a1b9"}),
    (hub("dockerspawner:1070", f"Removing container {CONTAINER_ID}"),
     {"event.action": "container-removing", "container.id": CONTAINER_ID}),
    (hub("dockerspawner:1305", "Removing container that should have been cleaned up: "
                               "jupyter-alice (id: 3f2a1b9)", "W"),
     {"event.action": "container-removing", "container.name": "jupyter-alice",
      "container.id": "3f2a1b9"}),
    (hub("dockerspawner:1040", "Container 'jupyter-alice' is gone"),
     {"event.action": "container-gone", "container.name": "jupyter-alice"}),
    (hub("dockerspawner:1047", "Container 'jupyter-alice' is on unhealthy node"),
     {"event.action": "container-unhealthy", "container.name": "jupyter-alice"}),
    (hub("dockerspawner:1013", "Container not found: jupyter-alice", "W"),
     {"event.action": "container-not-found", "container.name": "jupyter-alice"}),
    # JupyterHub 5.3+ (spawner.py)
    (hub("spawner:922", "Received unhandled user_options for alice:gpu: image, cpu_limit",
         "W"),
     {"event.action": "user-options-unhandled", "user.name": "alice",
      "labels.jupyterhub_server": "gpu", "labels.user_options": "image, cpu_limit"}),
    (hub("spawner:922", "Received unhandled user_options for alice: image", "W"),
     {"event.action": "user-options-unhandled", "user.name": "alice",
      "labels.user_options": "image"}),
    # handlers/base.py: user_server_name is user:server for a named server
    (hub("base:1193", "User alice:gpu took 3.600 seconds to start"),
     {"event.action": "spawn", "user.name": "alice", "labels.jupyterhub_server": "gpu",
      "event.duration": 3_600_000_000}),
    (hub("base:1041", "Failed login for 'mallory'", "W"),  # 6.x: %r
     {"event.action": "login-failed", "user.name": "mallory"}),
    (hub("base:980", "Failed login for mallory", "W"),  # 5.x: %s
     {"event.action": "login-failed", "user.name": "mallory"}),
    # user.py: the four ways a spawn fails
    (hub("user:1058", "alice's server failed to start in 30 seconds, giving up.", "W"),
     {"event.action": "spawn-failed", "user.name": "alice",
      "labels.spawn_failure": "failed to start in 30 seconds"}),
    (hub("user:1065", "Not starting alice's server gpu: pre_spawn_hook refused", "E"),
     {"event.action": "spawn-failed", "user.name": "alice",
      "labels.jupyterhub_server": "gpu", "labels.spawn_failure": "pre_spawn_hook refused"}),
    # a standby adopting the old hub's servers (app.py, proxy.py)
    (hub("app:3117", "alice still running"),
     {"event.action": "server-adopted", "user.name": "alice"}),
    (hub("proxy:421", "Adding missing route for /user/alice/ (Server(url=http://127.0.0.1:"
                      "41234/user/alice/, bind_url=http://127.0.0.1:41234/user/alice/))", "W"),
     {"event.action": "route-added", "user.name": "alice"}),
    (hub("proxy:421", "Adding missing route for /jhub/user/j%C3%BC/gpu/ (Server(url=http://"
                      "127.0.0.1:41235/jhub/user/j%C3%BC/gpu/, bind_url=...))", "W"),
     {"event.action": "route-added", "user.name": "jü", "labels.jupyterhub_server": "gpu"}),
    (hub("proxy:450", "Adding missing route for cull (Server(url=http://127.0.0.1:9000/, "
                      "bind_url=http://127.0.0.1:9000/))", "W"),
     {"event.action": "route-added"}),
    (hub("app:3126", "alice:gpu appears to have stopped while the Hub was down", "W"),
     {"event.action": "server-exited", "user.name": "alice",
      "labels.jupyterhub_server": "gpu"}),
]  # fmt: skip


@pytest.mark.parametrize(("line", "fields"), SPAWNER_LINES)
def test_spawner_container_and_adoption_lines(line: str, fields: dict) -> None:
    doc = parse("jupyterhub", line)
    named = ("event.", "user.", "container.", "labels.")
    assert {k: v for k, v in doc.items() if k.startswith(named) and k != "event.dataset"} == fields


REFUSED_LINES = [
    # tornado's web.py log_exception: "%d %s: %s" with "METHOD URI (REMOTE_IP)"
    (hub("web:1873", "400 POST /hub/api/users/bob/server (127.0.0.1): Specifying image to "
                     "launch is not allowed", "W"),
     400, "POST", "/hub/api/users/bob/server", "127.0.0.1",
     "Specifying image to launch is not allowed"),
    (hub("web:1873", "400 POST /hub/api/users/eve/server (127.0.0.1): Image debian:bookworm "
                     "not in allowed list: hubkeeper/singleuser:4c1d", "W"),
     400, "POST", "/hub/api/users/eve/server", "127.0.0.1",
     "Image debian:bookworm not in allowed list: hubkeeper/singleuser:4c1d"),
    (hub("web:1873", "403 GET /hub/api/users?offset=0 (::1): Missing or invalid credentials.",
         "W"),
     403, "GET", "/hub/api/users", "::1", "Missing or invalid credentials."),
    (hub("web:1873", "403 POST /hub/login?next=%2Fhub%2F (127.0.0.7): Login form invalid or "
                     "expired. Try again.", "W"),
     403, "POST", "/hub/login", "127.0.0.7", "Login form invalid or expired. Try again."),
]  # fmt: skip


@pytest.mark.parametrize(("line", "status", "method", "path", "ip", "reason"), REFUSED_LINES)
def test_refused_requests_keep_their_reason(
    line: str, status: int, method: str, path: str, ip: str, reason: str
) -> None:
    doc = parse("jupyterhub", line)
    assert (doc["http.response.status_code"], doc["http.request.method"], doc["url.path"]) == (
        status, method, path,
    )  # fmt: skip
    assert (doc["client.ip"], doc["event.reason"], doc["log.level"]) == (ip, reason, "warning")
    assert "event.duration" not in doc and "user.name" not in doc


@pytest.mark.parametrize(
    "message",
    [
        "Proxy still running at pid=4242",  # not a user's server
        "Kernel abc still running",
        "Container jupyter-alice is gone",  # not DockerSpawner's quoting
        "Created volume jupyterhub-user-alice",
        "User alice took a while to start",
        "200 GET /hub/api (bad",
        "Adding missing route",
    ],
)
def test_lookalike_lines_get_no_action(message: str) -> None:
    doc = parse("jupyterhub", hub("app:1", message))
    assert "event.action" not in doc and "event.reason" not in doc and doc["message"] == message


def test_numbers_too_long_for_their_field_type_are_not_taken() -> None:
    """A long field must fit a long, a duration a float: no overflow, no refused document."""
    big = "9" * 30
    assert "process.exit_code" not in parse(
        "jupyterhub", HUB + f"User alice server stopped with exit code: {big}"
    )
    spawn = parse("jupyterhub", HUB + f"User alice took {big} seconds to start")
    assert "event.action" not in spawn
    assert "event.duration" not in parse("jupyterhub", HUB + f"200 GET /x (@1.2.3.4) {big}ms")
    assert parse("jupyterhub", f"[I 2026-11-25 17:16:10.046 JupyterHub log:{big}] x") is None
    assert parse("nginx_error", f"2026/11/25 17:16:07 [error] {big}#1: x") is None
    assert parse("nginx_access", f'1.2.3.4 - - [25/Nov/2026:18:16:07 +0000] "GET / HTTP/1.1" '
                                 f'200 {big} "-" "-"') is None  # fmt: skip


def _seconds(text: str) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        hub_event(text)
        http_fields(text)
        best = min(best, time.perf_counter() - started)
    return best


@pytest.mark.parametrize(
    "build",
    [
        lambda n: "User " + "a" * n,
        lambda n: "User " + "a:" * n + " took",
        lambda n: "Error starting " + "a'" * n,
        lambda n: "Not starting " + "a's server " * n,
        lambda n: "Received unhandled user_options for " + "a:" * n,
        lambda n: "Created container " + "a" * n + " (id: " + "b" * n,
        lambda n: "Removing container that should have been cleaned up: " + "a (id: " * n,
        lambda n: "Adding missing route for " + "/user/" * n,
        lambda n: "Container '" + "a" * n,
        lambda n: "a'" * n + "s server failed to start in 1 seconds, giving up.",
        lambda n: "a:" * n + " appears to have stopped while the Hub was down",
        lambda n: "200 GET " + "a" * n + " (" + "b" * n,
        lambda n: "200 GET /x (" + "@" * n + ") 1",
        lambda n: "403 GET /x " + "(" * n,
    ],
)
def test_patterns_take_linear_time_on_hostile_messages(build) -> None:
    """Four times the input may take about four times as long, never sixteen (a ratio,
    not a wall-clock bound). The floor of 5 ms keeps a busy machine's pause from failing a
    linear pattern (well under 1 ms here) while a quadratic one on 128 KiB takes seconds."""
    small, large = _seconds(build(1 << 15)), _seconds(build(1 << 17))
    assert large < 10 * max(small, 5e-3)


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
    assert (doc["process.pid"], doc["hubkeeper.nginx.connection_id"]) == (26058, 5)
    assert (doc["client.ip"], doc["http.request.method"], doc["url.path"]) == (
        "127.0.0.1",
        "GET",
        "/hub/",
    )
    assert doc["hubkeeper.nginx.upstream"] == "http://127.0.0.1:8001/hub/"
    notice = parse(
        "nginx_error", '2026/11/25 17:16:07 [notice] 26058#26058: using the "epoll" event method'
    )
    assert notice["log.level"] == "notice" and "hubkeeper.nginx.connection_id" not in notice


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
        "hubkeeper.json": {"port": 9104},
    }
    other = parse("json", '{"time": 1795608000.5, "msg": "hi", "severity": "WARN", "x": {"y": 1}}')
    assert "event.action" not in other  # only structlog's "event" names an action
    assert (other["@timestamp"], other["log.level"], other["hubkeeper.json"]) == (
        "2026-11-25T12:00:00.500Z", "warning", {"x": {"y": 1}},
    )  # fmt: skip
    assert parse("json", "[1, 2]") is None and parse("json", "{broken") is None


def test_own_events_type_their_context_and_other_json_stays_flattened() -> None:
    cull = parse(
        "json",
        '{"kind": "idle", "user": "cat", "server": "", "action": "stop", "reason": "idle", '
        '"result": "done", "idle_seconds": 12.5, "dry_run": false, "event": "cull_decision", '
        '"level": "info", "logger": "hubkeeper.watchers.culler.report", '
        '"timestamp": "2026-11-25T17:00:00Z"}',
    )
    assert {k: v for k, v in cull.items() if k not in ("@timestamp", "message")} == {
        "event.action": "cull_decision", "log.level": "info",
        "log.logger": "hubkeeper.watchers.culler.report", "user.name": "cat",
        "event.reason": "idle",
        "hubkeeper.event.kind": "idle", "hubkeeper.event.action": "stop",
        "hubkeeper.event.result": "done", "labels.jupyterhub_server": "",  # as the labels
        "hubkeeper.json": {"idle_seconds": 12.5, "dry_run": False},
    }  # fmt: skip
    switched = parse(
        "json",
        '{"event": "nginx_switched", "active": true, "hub": "b", '
        '"logger": "hubkeeper.watchers.hubs.watcher", "state": {"a": "down"}}',
    )
    assert (switched["hubkeeper.event.active"], switched["labels.hub"]) == ("true", "b")
    assert switched["hubkeeper.json"] == {"state": {"a": "down"}}  # not a scalar: kept as is
    # a user's container may use the same keys: they stay its own
    theirs = parse("json", '{"msg": "hi", "user": {"id": 7}, "reason": 3, "logger": "app"}')
    assert theirs["hubkeeper.json"] == {"user": {"id": 7}, "reason": 3}
    assert "user.name" not in theirs and "event.reason" not in theirs


def test_json_keys_too_long_for_one_term_are_shipped_raw() -> None:
    assert parse("json", json.dumps({"k" * 6000: 1, "v": "x" * 10_000}))  # a long value is fine
    with pytest.raises(Unparsable, match="json_key_too_long"):
        parse("json", json.dumps({"a" * 4000: {"b" * 4000: 1}}))  # a.b: 8001 characters


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
    assert normalize_timestamp("yesterday") == "yesterday"  # not a time: caught when recorded
    assert normalize_timestamp(True) is None


def test_parsing_is_fast_enough() -> None:
    """A cheap guard against accidental slowness (the benchmark measures properly)."""
    parser = make_parser("jupyterhub", "UTC")
    line = HUB + "200 GET /hub/api/users/alice (operator@127.0.0.1) 7.62ms"
    started = time.process_time()
    for _ in range(20000):
        parser.parse(line)
    assert time.process_time() - started < 2.0
