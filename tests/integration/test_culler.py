"""``hubkeeper cull`` against a real hub (DockerSpawner, real user containers, NGINX) with
short timeouts, and side by side with jupyterhub-idle-culler on the same hub state.

One stack for the module: the hub polls its proxy for activity every second, and runs a
dry-run culler as a managed service. Each test runs ``hubkeeper cull --once`` as its own
process and reads its JSON audit lines; every run is checked for leaked tokens.
"""

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker.errors
import pytest
import requests
from jupyterhub_idle_culler import cull_idle

from hubkeeper import prtg
from hubkeeper.deploy.stack import Stack, free_ports, http_ok, running_stack, wait_for
from hubkeeper.hub.images import ALT_IMAGE, BASE_IMAGE
from hubkeeper.hubapi import HubAPIError, HubClient
from hubkeeper.loader import load
from hubkeeper.watchers.culler.culler import Culler
from hubkeeper.watchers.culler.decide import UserPlan, plan, still_idle
from hubkeeper.watchers.culler.model import parse_time
from tests.integration.helpers import CULL_TIMEOUT as TIMEOUT
from tests.integration.helpers import (
    CULLER_TOKEN,
    cull,
    culler_config,
    server_status,
    start_frozen,
    user_containers,
)
from tests.integration.storage_peers import storagefs, watcher

BURN = "while True: pass"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("culler")
    (port,) = free_ports(1)
    managed = {
        "managed_service": True,
        "dry_run": True,
        "cull_every": 2.0,
        "timeout": 3600.0,
        "hub_token_file": CULLER_TOKEN,
        "state_file": str(workdir / "managed-culler.json"),
        "endpoint": {"port": port},
        # enabled so that the hub grants the culler every scope these tests use
        "cull_users": True,
        "report_activity": True,
        "exempt_groups": ["staff"],
    }
    with running_stack(
        workdir / "stack",
        hub_name=f"cull-{secrets.token_hex(3)}",
        overrides={
            "jupyterhub": {"last_activity_interval": 1, "admin_users": ["h-admin"]},
            "culler": managed,
        },
    ) as running:
        yield running


# --- hub state ------------------------------------------------------------------------------


def operator(stack: Stack) -> HubClient:
    """The operator's client, with time for a spawn to answer (the hub says 202 after 10 s)."""
    client = stack.client()
    return HubClient(dataclasses.replace(client.config, timeout=60.0))


def spawn(stack: Stack, *servers: str | tuple[str, str], options: dict | None = None) -> None:
    """Create the users and start their servers concurrently; wait until all are ready."""
    client = operator(stack)
    specs = [(s, "") if isinstance(s, str) else s for s in servers]
    with contextlib.suppress(HubAPIError):  # 409 when they all exist
        client.create_users(sorted({user for user, _ in specs}))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda spec: client.start_server(*spec, options), specs))
    wait_for(lambda: all(ready(client, *spec) for spec in specs), 90, f"servers {specs}")


def server(client: HubClient, user: str, name: str = "") -> dict | None:
    return client.user(user)["servers"].get(name)


def ready(client: HubClient, user: str, name: str = "") -> bool:
    return bool((server(client, user, name) or {}).get("ready"))


@contextlib.contextmanager
def active(stack: Stack, *servers: tuple[str, str]) -> Iterator[None]:
    """Keep servers active: a request through NGINX every 0.5 s, which the proxy records."""
    headers = {"Authorization": f"token {stack.client().config.token.reveal()}"}
    stopping = threading.Event()

    def ping() -> None:
        while not stopping.wait(0.5):
            for user, name in servers:
                prefix = f"{stack.public_url}/user/{user}/" + (f"{name}/" if name else "")
                with contextlib.suppress(requests.RequestException):
                    requests.get(prefix + "api/status", headers=headers, timeout=5)

    thread = threading.Thread(target=ping, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopping.set()
        thread.join(10)


# --- tests ------------------------------------------------------------------------------------


def test_runs_as_a_managed_service_and_holds_the_lock(stack: Stack) -> None:
    base = f"http://127.0.0.1:{stack.config.culler.endpoint.port}"
    wait_for(lambda: http_ok(base + "/healthz"), 60, "the culler run by the hub")

    def metrics() -> str:
        return requests.get(base + "/metrics", timeout=10).text

    wait_for(lambda: 'cycles_total{result="ok"}' in metrics(), 60, "a cycle of the culler")
    text = metrics()
    assert "hubkeeper_culler_acting 1.0" in text
    assert "hubkeeper_culler_dry_run 1.0" in text
    assert "hubkeeper_culler_culls_total{" not in text  # a dry run culls nothing
    payload = requests.get(base + "/prtg/culler", timeout=10).json()
    assert prtg.check(payload) == [], payload
    channels = {c["channel"]: c["value"] for c in payload["prtg"]["result"]}
    assert channels["Acting"] == 1

    second = cull(stack, "a-second", state_file=stack.config.culler.state_file)
    assert second.code == 75
    assert [e["event"] for e in second.events if e["level"] == "warning"] == ["culler_lock_held"]
    assert not second.decisions()


def test_idle_culled_active_busy_and_exempt_kept_and_dry_run_changes_nothing(
    stack: Stack,
) -> None:
    client = operator(stack)
    users = ["b-idle", "b-active", "b-busy", "b-exempt", "b-staff"]
    spawn(stack, *users)
    spawn(stack, "b-alt", options={"image": ALT_IMAGE})
    with contextlib.suppress(HubAPIError):
        client.request("POST", "/groups/staff", json={"users": ["b-staff"]})
    (busy,) = user_containers(stack, "b-busy")
    busy.exec_run(["python3", "-c", BURN], detach=True)
    settings = {
        "exempt_users": ["b-exempt"],
        "exempt_groups": ["staff"],
        "exempt_images": [ALT_IMAGE],
        "report_activity": True,
        "busy_cpu_percent": 20.0,
    }
    try:
        with active(stack, ("b-active", "")):
            time.sleep(TIMEOUT + 1)  # all but b-active are idle past the timeout now
            busy_seen = server(client, "b-busy")["last_activity"]
            dry = cull(stack, "b-dry", "--dry-run", **settings)
            assert all(ready(client, user) for user in [*users, "b-alt"])
            assert server(client, "b-busy")["last_activity"] == busy_seen
            real = cull(stack, "b-real", **settings)
        assert dry.code == 0 and real.code == 0
        expected = {
            "b-idle": ("stop", "idle", "done"),
            "b-active": ("keep", "active", "kept"),
            "b-busy": ("keep", "busy", "activity_reported"),
            "b-exempt": ("keep", "exempt_user", "kept"),
            "b-staff": ("keep", "exempt_group", "kept"),
            "b-alt": ("keep", "exempt_image", "kept"),
        }
        assert {user: real.outcome(user) for user in expected} == expected
        dry_run = {**expected, "b-idle": ("stop", "idle", "dry_run")}
        dry_run["b-busy"] = ("keep", "busy", "kept")  # a dry run reports nothing to the hub
        assert {user: dry.outcome(user) for user in expected} == dry_run
        assert real.decisions()[("b-busy", "")]["cpu_percent"] > 50
        assert real.decisions()[("b-idle", "")]["idle_seconds"] >= TIMEOUT

        assert server(client, "b-idle") is None
        assert user_containers(stack, "b-idle") == []
        assert all(ready(client, user) for user in [*users[1:], "b-alt"])
        assert server(client, "b-busy")["last_activity"] > busy_seen  # the hub agrees now
    finally:
        client.stop_server("b-busy")  # the burner would take a CPU from the other tests


def test_max_age_culls_active_servers_and_named_servers_follow_their_settings(
    stack: Stack,
) -> None:
    client = operator(stack)
    spawn(stack, "c-old", "c-named", ("c-named", "nb"))
    with active(stack, ("c-old", "")):
        time.sleep(TIMEOUT + 1)
        first = cull(stack, "c-first", cull_named_servers=False, busy_cpu_percent=0.0)
        assert first.outcome("c-old") == ("keep", "active", "kept")
        assert first.outcome("c-named") == ("stop", "idle", "done")
        assert first.outcome("c-named", "nb") == ("keep", "named_servers_kept", "kept")
        assert ready(client, "c-named", "nb") and server(client, "c-named") is None

        second = cull(
            stack, "c-second", max_age=TIMEOUT, remove_named_servers=True, busy_cpu_percent=0.0
        )
    assert second.outcome("c-old") == ("stop", "max_age", "done")
    assert second.decisions()[("c-old", "")]["idle_seconds"] < TIMEOUT  # active, yet culled
    assert second.outcome("c-named", "nb") == ("stop_remove", "idle", "done")
    assert server(client, "c-old") is None
    everything = client.request("GET", "/users/c-named", params={"include_stopped_servers": 1})
    assert "nb" not in everything["servers"]  # removed, not only stopped
    assert user_containers(stack, "c-old") == [] and user_containers(stack, "c-named") == []


class FaultyHub:
    """A reverse proxy in front of NGINX that fails requests on demand.

    ``faults`` maps (method, a substring of the path) to "stall" (no answer for ``stall``
    seconds) or an HTTP status, whose error body echoes the request's Authorization header
    (a hub error text must never bring the token into the culler's log).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: dict[tuple[str, str], str] = {}
        self.stall = 4.0
        self.seen: list[tuple[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.handle(self)

            do_POST = do_DELETE = do_PATCH = do_GET

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda request, address: None  # broken pipes after stalls
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        self.seen.append((request.command, request.path))
        fault = next(
            (f for (m, p), f in self.faults.items() if m == request.command and p in request.path),
            None,
        )
        if fault == "stall":
            time.sleep(self.stall)
            return
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        if fault is not None:
            status, content = (
                int(fault),
                json.dumps(
                    {"message": f"refused request with Authorization: {headers['Authorization']}"}
                ).encode(),
            )
        else:
            answer = requests.request(
                request.command,
                self.upstream + request.path,
                headers=headers,
                data=body,
                timeout=60,
                allow_redirects=False,
            )
            status, content = answer.status_code, answer.content
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(content)))
        request.end_headers()
        request.wfile.write(content)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_failing_or_hanging_hub_causes_no_wrong_cull(stack: Stack) -> None:
    client = operator(stack)
    spawn(stack, "e-idle", "e-kept")  # two active users: the list takes two pages
    others = [user["name"] for user in client.users() if user["name"] != "e-idle"]
    faulty = FaultyHub(stack.public_url)
    hub = {"url": faulty.url, "timeout": 1.0, "retries": 1, "backoff": 0.1, "page_size": 1}
    # culling users too: a user whose server did not stop must not be deleted
    settings = {"cull_users": True, "exempt_users": others, "busy_cpu_percent": 0.0}
    time.sleep(TIMEOUT + 1)
    try:
        faulty.faults = {("GET", "/hub/api/users?state=active"): "stall"}
        hanging = cull(stack, "e-hang", hub=hub, **settings)
        faulty.faults = {("GET", "&offset=1&"): "503"}  # the second page of users fails
        partial = cull(stack, "e-partial", hub=hub, **settings)
        faulty.faults = {("DELETE", "/hub/api/users/e-idle/server"): "403"}
        refused = cull(stack, "e-refused", hub=hub, **settings)
        deletes = [path for method, path in faulty.seen if method == "DELETE"]
    finally:
        faulty.close()
    for failed in (hanging, partial):
        assert failed.code == 1
        assert [e["event"] for e in failed.events if e["level"] == "warning"][-1] == (
            "cull_cycle_failed"
        )
        assert not failed.decisions()
    assert "no response: ReadTimeout after 2 attempt(s)" in hanging.output
    assert "503 after 2 attempt(s)" in partial.output
    assert deletes == ["/hub/api/users/e-idle/server"]  # only the one the proxy refused
    assert refused.code == 0
    assert refused.outcome("e-idle") == ("stop", "idle", "error")
    assert refused.outcome("e-idle", None, "user") == ("keep", "servers_stopping", "kept")
    assert "Authorization: token ***" in refused.output  # the echoed token, masked
    assert ready(client, "e-idle")

    recovered = cull(stack, "e-recovered", **settings)  # the same cull through NGINX works
    assert recovered.outcome("e-idle") == ("stop", "idle", "done")
    assert recovered.outcome("e-idle", None, "user") == ("delete", "idle", "done")
    with pytest.raises(HubAPIError) as gone:
        client.user("e-idle")
    assert gone.value.status == 404


def test_orphan_containers_are_reported_and_removed_only_when_enabled(stack: Stack) -> None:
    labels = stack.config.labels
    container = stack.docker.containers.run(
        BASE_IMAGE,
        ["sleep", "600"],
        detach=True,
        name=f"orphan-{secrets.token_hex(3)}",
        network_mode="host",
        labels={
            labels.user: "f-ghost",
            labels.server: "",
            labels.hub: stack.config.jupyterhub.name,
            labels.image: BASE_IMAGE,
        },
    )
    try:
        reported = cull(stack, "f-report", orphans="report", orphan_grace=0.0)
        assert reported.outcome("f-ghost", "", "orphan") == ("report", "orphan", "reported")
        assert reported.decisions("orphan")[("f-ghost", "")]["container"] == container.name
        young = cull(stack, "f-young", orphans="remove", orphan_grace=3600.0)
        assert ("f-ghost", "") not in young.decisions("orphan")
        container.reload()
        assert container.status == "running"

        removed = cull(stack, "f-remove", orphans="remove", orphan_grace=0.0)
        assert removed.outcome("f-ghost", "", "orphan") == ("remove_container", "orphan", "done")
        with pytest.raises(docker.errors.NotFound):
            container.reload()
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True)


def test_a_stuck_spawn_is_reported_then_stopped(stack: Stack) -> None:
    """A container frozen as soon as it starts keeps its spawn pending (until the hub's own
    60 s start timeout)."""
    client = operator(stack)
    client.create_users(["g-stuck"])
    start_frozen(stack, client, "g-stuck")
    wait_for(lambda: (server(client, "g-stuck") or {}).get("pending") == "spawn", 20, "pending")
    time.sleep(2.5)

    reported = cull(stack, "g-report", pending_timeout=2.0)
    assert reported.outcome("g-stuck") == ("report", "stuck_spawn", "reported")
    assert (server(client, "g-stuck") or {}).get("pending") == "spawn"
    stopped = cull(stack, "g-stop", pending_timeout=2.0, stop_stuck=True)
    assert stopped.outcome("g-stuck")[:2] == ("stop", "stuck_spawn")
    assert stopped.outcome("g-stuck")[2] in ("done", "stopping", "unconfirmed")
    wait_for(lambda: server(client, "g-stuck") is None, 60, "the stuck server to stop")


def run_idle_culler(stack: Stack, **options: object) -> tuple[set, set]:
    """One cycle of jupyterhub-idle-culler (PyPI), in process; the servers and users it
    culled, as its log tells them."""
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("jupyterhub-idle-culler-test")
    logger.setLevel(logging.INFO)
    logger.addHandler(Collect())
    token = (
        Path(stack.config.jupyterhub.services_token_dir) / "hubkeeper-culler.token"
    ).read_text()
    asyncio.run(
        cull_idle(
            url=f"{stack.public_url}/hub/api",
            api_token=token.strip(),
            logger=logger,
            **options,
        )
    )
    servers, users = set(), set()
    for message in records:
        if message.startswith("Culling server "):
            name = message.removeprefix("Culling server ").split(" ")[0]
            user, _, server_name = name.partition("/")
            servers.add((user, server_name))
        elif message.startswith("Culling user "):
            users.add(message.removeprefix("Culling user ").split(" ")[0])
    return servers, users


def test_a_server_on_a_node_whose_storage_hangs_is_reported_then_culled_when_it_answers(
    stack: Stack, tmp_path: Path
) -> None:
    """The real culler asks the real storage watcher of this node (a FUSE mount made to
    hang): the idle server is reported, not stopped, and stopped once the mount answers."""
    client, user = operator(stack), f"st-{secrets.token_hex(3)}"
    spawn(stack, user)
    spawned = time.monotonic()
    mounts = {"mounts": [{"name": "notebooks", "path": str(tmp_path / "notebooks")}]}
    with storagefs(tmp_path) as fs, watcher(tmp_path, mounts) as storage:
        wait_for(
            lambda: user in [s["user"] for s in storage.status()["servers"] or []],
            15,
            "the storage watcher listing the server",
        )
        fs.mode("hang")
        wait_for(lambda: storage.status()["hung"] == ["notebooks"], 10, "the mount hung")
        time.sleep(max(0.0, spawned + TIMEOUT + 1 - time.monotonic()))  # idle by now
        watchers = [f"127.0.0.1:{storage.port}"]
        held = cull(stack, "st-hung", storage_watchers=watchers, busy_cpu_percent=0)
        assert held.outcome(user) == ("report", "storage_hung", "reported")
        assert [e["nodes"] for e in held.events if e["event"] == "culler_storage_hold"] == [
            ["node-a"]
        ]
        assert ready(client, user) and user_containers(stack, user)

        fs.mode("ok")
        wait_for(lambda: storage.status()["hung"] == [], 10, "the mount answering again")
        resumed = cull(stack, "st-back", storage_watchers=watchers, busy_cpu_percent=0)
        assert resumed.outcome(user) == ("stop", "idle", "done")
        assert server(client, user) is None


def test_culls_the_same_servers_and_users_as_jupyterhub_idle_culler(stack: Stack) -> None:
    client = operator(stack)
    client.create_users(["h-nobody"])  # h-admin is an admin of the hub (admin_users)
    spawn(stack, "h-idle1", "h-idle2", "h-active", "h-named", ("h-named", "nb"))
    with active(stack, ("h-active", ""), ("h-named", "")):
        time.sleep(TIMEOUT + 2)
        ours = cull(
            stack,
            "h-ours",
            "--dry-run",
            cull_users=True,
            cull_admin_users=False,
            remove_named_servers=True,
            concurrency=5,
        )
        their_servers, their_users = run_idle_culler(
            stack,
            inactive_limit=int(TIMEOUT),
            cull_users=True,
            cull_admin_users=False,
            remove_named_servers=True,
            concurrency=5,
            api_page_size=200,
        )
    our_servers = {key for key, e in ours.decisions().items() if e["result"] == "dry_run"}
    our_users = {
        user for (user, _), e in ours.decisions("user").items() if e["result"] == "dry_run"
    }
    assert our_servers == their_servers
    assert our_users == their_users
    assert {("h-idle1", ""), ("h-idle2", ""), ("h-named", "nb")} <= our_servers
    assert not {("h-active", ""), ("h-named", "")} & our_servers
    assert {"h-idle1", "h-idle2", "h-nobody"} <= our_users
    assert not {"h-admin", "h-active", "h-named"} & our_users
    # and jupyterhub-idle-culler really did it: those servers and users are gone
    assert server(client, "h-named", "nb") is None and ready(client, "h-named")
    remaining = {user["name"] for user in client.users()}
    assert not their_users & remaining and "h-admin" in remaining


def idle_stop(culler: Culler, user: str) -> UserPlan:
    """The cycle's plan for ``user``, which must be an idle stop of the one server."""
    seen = culler.observe()
    plans, _ = plan(culler.views(seen), seen.orphans, culler.section, seen.now, [])
    (mine,) = [p for p in plans if any(d.user == user for d in p.servers)]
    assert [(d.action, d.reason) for d in mine.servers] == [("stop", "idle")]
    return mine


def test_a_user_back_after_the_cycle_looked_keeps_the_server(stack: Stack) -> None:
    """Found by the chaos soak: a server was stopped seconds after its user came back,
    between the cycle's look at the hub and the stop. A last look keeps it."""
    spawn(stack, "back")
    time.sleep(TIMEOUT + 1)  # idle past the timeout
    culler = Culler(load(culler_config(stack, "last-look", busy_cpu_percent=0.0)))
    try:
        mine = idle_stop(culler, "back")
        with active(stack, ("back", "")):  # the user is back, through NGINX
            wait_for(lambda: still_idle(mine.servers[0], last_activity(stack), time.time())
                     is False, 20, "the hub to record the activity")  # fmt: skip
            outcomes = culler.execute([mine], [])
    finally:
        culler.close()
    assert [o.result for o in outcomes] == ["skipped"]
    assert ready(operator(stack), "back")


def last_activity(stack: Stack, user: str = "back") -> float | None:
    return parse_time((server(operator(stack), user) or {}).get("last_activity"))


@pytest.fixture
def lagging(tmp_path: Path) -> Iterator[Stack]:
    """A stack whose hub reads its proxy's activity every 300 s, JupyterHub's default."""
    with running_stack(tmp_path / "stack", hub_name=f"lag-{secrets.token_hex(3)}") as running:
        yield running


def test_a_user_back_within_the_hubs_activity_lag_keeps_the_server(lagging: Stack) -> None:
    """The race every idle culler has: a user back after a long idle spell is known to the
    proxy at once, to the hub only at its next read of the proxy (up to 300 s later by
    default). The last look before the stop asks the proxies too."""
    spawn(lagging, "late")
    time.sleep(TIMEOUT + 1)  # idle past the timeout
    culler = Culler(load(culler_config(lagging, "lag", busy_cpu_percent=0.0)))
    try:
        mine = idle_stop(culler, "late")
        back = time.time()
        assert server_status(lagging, "late").status_code == 200  # back, through NGINX
        outcomes = culler.execute([mine], [])
    finally:
        culler.close()
    assert [o.result for o in outcomes] == ["skipped"]
    assert ready(operator(lagging), "late")
    assert (last_activity(lagging, "late") or 0) < back  # the hub has not read it yet
