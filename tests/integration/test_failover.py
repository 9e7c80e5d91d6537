"""Hub failover with two real hubs on one SQLite database, real user containers, a real
NGINX, a real Alertmanager, and the watcher running as its own process."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from hubkeeper import prtg
from hubkeeper.deploy import hubctl
from hubkeeper.deploy.stack import Stack, running_stack, wait_for
from hubkeeper.nginx import TEMPLATE, NginxError
from hubkeeper.watchers.hubs.state import StateStore
from tests.integration.helpers import (
    UNKNOWN_DIRECTIVE,
    HubCensus,
    Load,
    break_nginx_config,
    nginx_config_healed,
    running_hubs,
    series,
    server_status,
    start_and_wait,
    start_frozen,
    user_containers,
)

WATCHER = {  # probe timing: the defaults
    "startup_grace": 1.0,
    "hold_time": 600.0,
    "fence_timeout": 10.0,
    "start_timeout": 45.0,
    "confirm_timeout": 5.0,
    "alert_resend_interval": 5.0,
}


@pytest.fixture
def template(tmp_path: Path) -> Path:
    """A copy of the NGINX template that a test may break after start-up."""
    path = tmp_path / "nginx.conf.template"
    path.write_text(TEMPLATE.read_text())
    return path


@pytest.fixture
def stack(tmp_path: Path, template: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    name = request.node.name.removeprefix("test_")[:24].rstrip("_").replace("_", "-")
    with running_stack(
        tmp_path / "stack",
        hub_name=f"fo-{name}",
        watcher={**WATCHER, **getattr(request, "param", {})},
        overrides={"nginx": {"template": str(template)}},
    ) as running:
        yield running


def state(stack: Stack) -> dict:
    return json.loads(Path(stack.config.watcher.state_file).read_text())


def alert_names(stack: Stack) -> set[str]:
    return {alert["labels"]["alertname"] for alert in stack.firing_alerts()}


def wait_for_alert(stack: Stack, name: str, timeout: float = 30) -> dict:
    wait_for(lambda: name in alert_names(stack), timeout, f"alert {name}")
    return next(a for a in stack.firing_alerts() if a["labels"]["alertname"] == name)


def watcher_get(stack: Stack, path: str) -> requests.Response:
    port = stack.config.watcher.endpoint.port
    return requests.get(f"http://127.0.0.1:{port}{path}", timeout=5)


def hub_pid(stack: Stack, name: str) -> int:
    pid = hubctl.launched_pid(stack.config, name)
    assert pid is not None, f"hub {name} is not running"
    return pid


def kill_hub_and_proxy(stack: Stack, name: str) -> None:
    proxy = hubctl.proxy_pid(stack.config, name)
    assert proxy is not None, f"the proxy of hub {name} is not running"
    os.killpg(hub_pid(stack, name), signal.SIGKILL)
    os.kill(proxy, signal.SIGKILL)


def with_servers(stack: Stack, *users: str) -> dict[str, str]:
    """Start the users' servers; return their container ids."""
    client = stack.client()
    client.create_users(list(users))
    for user in users:
        start_and_wait(client, user)
    containers = {user: [c.id for c in user_containers(stack, user)] for user in users}
    assert all(server_status(stack, user).status_code == 200 for user in users)
    assert all(len(ids) == 1 for ids in containers.values()), containers
    return {user: ids[0] for user, ids in containers.items()}


def with_alice(stack: Stack) -> str:
    return with_servers(stack, "alice")["alice"]


def assert_failed_over_keeping(stack: Stack, containers: dict[str, str]) -> None:
    wait_for(lambda: state(stack)["active"] == "b", 60, "the failover to hub b")
    assert stack.nginx.served_generation() == 2
    assert stack.nginx.live() == ("b", 2)
    for user, container_id in containers.items():
        answers = lambda user=user: server_status(stack, user).status_code == 200  # noqa: E731
        wait_for(answers, 30, f"{user} via hub b")
        assert [c.id for c in user_containers(stack, user)] == [container_id]
    assert state(stack)["last_failover"]["reason"] == "active_down"
    alert = wait_for_alert(stack, "HubkeeperFailover")
    assert alert["labels"] == {
        "alertname": "HubkeeperFailover", "hub": "b", "severity": "warning", "team": "platform",
    }  # fmt: skip
    assert alert["annotations"]["description"].startswith("Hub a failed (active_down); b took")
    assert alert["annotations"]["runbook_url"].endswith("/HubkeeperFailover.md")


def assert_failed_over_keeping_alice(stack: Stack, container_id: str) -> None:
    assert_failed_over_keeping(stack, {"alice": container_id})


def cause(stack: Stack, fault: str) -> float:
    """Break hub instance a; return when."""
    hub, proxy = hub_pid(stack, "a"), hubctl.proxy_pid(stack.config, "a")
    assert proxy is not None, "the proxy of hub a is not running"
    at = time.time()
    if fault == "hub_kill":
        os.killpg(hub, signal.SIGKILL)
    elif fault == "hub_hang":
        os.kill(hub, signal.SIGSTOP)  # the hub accepts connections and answers nothing
    elif fault == "proxy_hang":
        os.kill(proxy, signal.SIGSTOP)
    else:
        os.killpg(hub, signal.SIGKILL)
        os.kill(proxy, signal.SIGKILL)
    return at


def nginx_user_errors(stack: Stack) -> list[str]:
    """Requests to user servers that NGINX answered with a 5xx, from its access log."""
    lines = (Path(stack.config.nginx.prefix) / "logs" / "access.log").read_text().splitlines()
    return [line for line in lines if '"GET /user/' in line and re.search(r'" 5\d\d ', line)]


def failover_under_load(stack: Stack, fault: str) -> tuple[Load, float]:
    """Cause ``fault`` under load and wait for the failover, with a census of the hubs on
    the database; the load runs until the hub API has answered through hub b for a while.
    Returns the load and the time of the fault."""
    containers = with_servers(stack, "alice", "bob")
    census = HubCensus(stack.config_path)
    census.start()
    load = Load(stack, users=("alice", "bob"))
    load.start()
    try:
        wait_for(lambda: len(load.samples) >= 20, 10, "load before the fault")
        fault_at = cause(stack, fault)
        assert_failed_over_keeping(stack, containers)
        wait_for(lambda: any(s.ok and s.generation == "2" for s in load.samples), 20, "hub API")
        time.sleep(2)  # and some more, once the old proxy was retired
    finally:
        load.stop()
        census.stop()
    assert census.most == 1, f"two hubs were on the database at once: {census.seen}"
    assert census.seen[-1] == {"b"}
    by_a = [s for s in load.samples if s.at > fault_at and s.ok and s.generation == "1"]
    assert not [s for s in by_a if "/hub/api/" in s.url], "hub a answered after the fault"
    # the old instance is a warm standby again: a new proxy, a hub off the database
    assert hubctl.proxy_pid(stack.config, "a") is not None
    assert hubctl.warm_pid(stack.config, "a") is not None
    return load, fault_at


def test_kill_9_of_the_hub_process_fails_over_without_a_failed_user_request(
    stack: Stack,
) -> None:
    load, _ = failover_under_load(stack, "hub_kill")
    assert load.failed(hub_api=False) == [] and nginx_user_errors(stack) == []
    assert state(stack)["last_failover"]["handover"] is True

    # what ops see: the PRTG sensor, `hubkeeper status`, the metrics
    port = stack.config.watcher.endpoint.port
    sensor = requests.get(f"http://127.0.0.1:{port}/prtg/hubs", timeout=5).json()
    assert prtg.check(sensor) == []
    values = {c["channel"]: c["value"] for c in sensor["prtg"]["result"]}
    assert values["Active hub up"] == 1 and values["Generation"] == 2
    assert values["Failovers last hour"] == 1
    assert "last failover a to b (active_down)" in sensor["prtg"]["text"]
    shown = subprocess.run(
        [sys.executable, "-m", "hubkeeper.cli", "status", "--config", str(stack.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert "active hub   b   generation 2" in shown and "last failover a -> b" in shown
    metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'hubkeeper_watcher_failovers_total{reason="active_down"} 1.0' in metrics
    assert 'hubkeeper_watcher_active_hub{hub="b"} 1.0' in metrics


def test_a_hung_hub_process_fails_over_without_a_failed_user_request(stack: Stack) -> None:
    load, _ = failover_under_load(stack, "hub_hang")
    assert load.failed(hub_api=False) == [] and nginx_user_errors(stack) == []
    assert state(stack)["last_failover"]["handover"] is True


@pytest.mark.parametrize("fault", ["instance_kill", "proxy_hang"])
def test_a_lost_proxy_fails_over_and_users_come_back(stack: Stack, fault: str) -> None:
    load, fault_at = failover_under_load(stack, fault)
    assert state(stack)["last_failover"]["handover"] is False
    last = max(s.at for s in load.samples)
    assert [s for s in load.samples if s.at > last - 1.5 and not s.ok] == []  # back for good
    for user in ("alice", "bob"):
        assert any(s.ok and s.at > fault_at and f"/user/{user}/" in s.url for s in load.samples)


# Less than JupyterHub's own init_spawners_timeout (10 s): a standby that waited for its
# check of a server still starting could not pass its probes in time.
@pytest.mark.parametrize("stack", [{"start_timeout": 8.0}], indirect=True)
def test_a_server_still_starting_at_the_failover_is_checked_after_the_standby_answers(
    stack: Stack,
) -> None:
    alice = with_alice(stack)
    client = stack.client()
    client.create_users(["carol"])
    start_frozen(stack, client, "carol")  # a server slow to answer its first request
    assert client.user("carol")["servers"][""]["pending"] == "spawn"
    (carol,) = user_containers(stack, "carol")
    try:
        cause(stack, "hub_kill")
        assert_failed_over_keeping_alice(stack, alice)
        # hub b answers while its check of carol's server waits for it
        server = client.user("carol")["servers"][""]
        assert (server["pending"], server["ready"]) == ("check", False)
    finally:
        stack.docker.api.unpause(carol.id)
    wait_for(lambda: server_status(stack, "carol").status_code == 200, 60, "carol via hub b")
    assert [c.id for c in user_containers(stack, "carol")] == [carol.id]


def test_a_failover_counts_as_activity_so_no_culler_reads_the_dead_hubs_view(
    stack: Stack,
) -> None:
    """A request through the old proxy after the old hub last read its routes (up to
    ``last_activity_interval``, 300 s here as by default, plus the outage) reaches no hub's
    database; a culler asking the new hub before it reads its own proxy's routes would
    take a server in use for idle (found by the chaos soak)."""
    alice = with_alice(stack)
    client = stack.client()
    time.sleep(1.5)  # the request below comes after anything the hub has recorded
    used_at = datetime.now(UTC)
    assert server_status(stack, "alice").status_code == 200  # through hub a's proxy
    cause(stack, "hub_kill")
    assert_failed_over_keeping_alice(stack, alice)
    user = client.user("alice")
    for seen in (user["last_activity"], user["servers"][""]["last_activity"]):
        assert datetime.fromisoformat(seen) >= used_at, (seen, used_at.isoformat())


@pytest.mark.parametrize("stack", [{"start_timeout": 15.0}], indirect=True)
def test_standby_that_cannot_start_leaves_nginx_unchanged_and_pages(stack: Stack) -> None:
    standby = stack.config.jupyterhub.instance("b")
    with socket.socket() as squatter:  # hub b cannot bind its port
        squatter.bind(("127.0.0.1", standby.hub_port))
        kill_hub_and_proxy(stack, "a")
        wait_for_alert(stack, "HubkeeperStandbyStartFailed", timeout=90)
    assert stack.nginx.live() == ("a", 1)
    assert stack.nginx.served_generation() == 1
    assert state(stack)["active"] == "a"
    assert running_hubs(stack.config_path) == set()
    page = wait_for_alert(stack, "HubkeeperAllHubsDown")
    assert page["labels"]["severity"] == "critical"


def planned_switch(stack: Stack, target: str) -> subprocess.CompletedProcess[str]:
    command = ["failover", "--to", target, "--timeout", "30", "--config", str(stack.config_path)]
    return subprocess.run(
        [sys.executable, "-m", "hubkeeper.cli", *command],
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_a_template_nginx_rejects_is_caught_before_anything_stops(
    stack: Stack, template: Path
) -> None:
    template.write_text(template.read_text().replace("worker_processes 1;", "worker_processes;"))
    result = planned_switch(stack, "b")
    assert result.returncode == 1, result.stdout
    wait_for_alert(stack, "HubkeeperNginxReloadFailed")
    assert stack.nginx.live() == ("a", 1)
    assert stack.nginx.served_generation() == 1
    assert running_hubs(stack.config_path) == {"a"}  # nothing was fenced


def test_a_listen_port_that_cannot_be_bound_is_caught_before_anything_stops(
    stack: Stack, template: Path
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        busy = squatter.getsockname()[1]
        template.write_text(
            template.read_text().replace(
                "listen {{listen}}:{{public_port}};",
                f"listen {{{{listen}}}}:{{{{public_port}}}};\n        listen 127.0.0.1:{busy};",
            )
        )
        result = planned_switch(stack, "b")
    assert result.returncode == 1, result.stdout
    wait_for_alert(stack, "HubkeeperNginxReloadFailed")
    assert stack.nginx.live() == ("a", 1)
    assert running_hubs(stack.config_path) == {"a"}


def test_a_reload_nginx_silently_ignores_is_rolled_back(stack: Stack) -> None:
    """Below the watcher's pre-check: NGINX keeps its old config when it cannot bind."""
    nginx, hub = stack.nginx, stack.config.jupyterhub.instance("a")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        original = nginx.render

        def render_with_busy_port(active: object, generation: int) -> str:
            text = original(active, generation)  # type: ignore[arg-type]
            return text.replace("client_max_body_size 0;", f"listen 127.0.0.1:{busy};", 1)

        nginx.render = render_with_busy_port  # type: ignore[method-assign]
        with pytest.raises(NginxError, match="still does not serve generation 5"):
            nginx.switch(hub, 5, confirm_timeout=3)
    assert nginx.live() == ("a", 1)
    assert nginx.served_generation() == 1


NGINX_CHECK = 2.0  # seconds between the watcher's checks of the live config


@pytest.mark.parametrize("stack", [{"nginx_check_interval": NGINX_CHECK}], indirect=True)
def test_a_config_broken_by_hand_keeps_users_served_and_the_watcher_replaces_it(
    stack: Stack, template: Path
) -> None:
    nginx, hub_a = stack.nginx, stack.config.jupyterhub.instance("a")
    error_log = nginx.prefix / "logs" / "error.log"
    healed = lambda: nginx_config_healed(nginx)  # noqa: E731
    labels = {"hub": "a", "team": "platform"}

    def metric(name: str, **wanted: str) -> list[float]:
        return series(watcher_get(stack, "/metrics").text, name, **wanted)

    load = Load(stack, users=(), rate=10.0)  # through NGINX to the hub API
    load.start()
    try:
        # an unknown directive: NGINX refuses the reload and serves on; the watcher replaces
        # the file with the generated one and keeps the refused one
        broken = break_nginx_config(nginx)
        refused = lambda: UNKNOWN_DIRECTIVE.split()[0] in error_log.read_text()  # noqa: E731
        wait_for(refused, 10, "NGINX to refuse the reload")
        assert nginx.served_generation() == 1
        wait_for(healed, 3 * NGINX_CHECK + 10, "the watcher to replace the refused file")
        assert nginx.rejected_path.read_text() == broken
        assert nginx.conf_path.read_text() == nginx.render(hub_a, 1)
        alert = wait_for_alert(stack, "HubkeeperNginxConfigRepaired")
        assert alert["labels"] == {"alertname": "HubkeeperNginxConfigRepaired",
                                   "severity": "warning", **labels}  # fmt: skip
        assert metric("hubkeeper_watcher_nginx_config_repairs_total", hub="a") == [1.0]
        assert metric("hubkeeper_watcher_nginx_config_valid", nginx="local") == [1.0]
        assert len(watcher_events(stack, "nginx_config_repaired")) == 1

        # a syntax error while the template is broken too: the repair fails and pages, the
        # checks go on, logged once
        good = template.read_text()
        template.write_text(good.replace("worker_processes 1;", "worker_processes;"))
        break_nginx_config(nginx, "server {")
        alert = wait_for_alert(stack, "HubkeeperNginxConfigInvalid")
        assert alert["labels"] == {"alertname": "HubkeeperNginxConfigInvalid",
                                   "severity": "critical", **labels}  # fmt: skip
        time.sleep(2 * NGINX_CHECK)  # two more checks find it refused
        found = watcher_get(stack, "/status").json()["nginx_config"]["local"]
        assert found["error"].startswith('[emerg] "server" directive is not allowed'), found
        assert "worker_processes" in found["repair_error"], found
        assert metric("hubkeeper_watcher_nginx_config_valid", nginx="local") == [0.0]
        assert len(watcher_events(stack, "nginx_config_invalid")) == 1
        assert nginx.served_generation() == 1
        template.write_text(good)
        repaired = lambda: metric("hubkeeper_watcher_nginx_config_repairs_total", hub="a") == [2.0]  # noqa: E731
        wait_for(repaired, 3 * NGINX_CHECK + 10, "the watcher to replace the refused file")
        assert healed()
        assert load.failed(hub_api=True) == []  # users were served all along

        # a failover while the file is broken (just after a check, so the failover comes
        # first): the switch renders the whole file, nginx -t passes, NGINX serves b
        StateStore(Path(stack.config.watcher.state_file)).request_switch("b")
        broken = break_nginx_config(nginx)
        wait_for(lambda: state(stack)["active"] == "b", 60, "the switch to hub b")
        assert nginx.live() == ("b", 2) and nginx.served_generation() == 2
        assert nginx.live_error() is None
        assert nginx.previous_path.read_text() == broken  # the switch replaced the broken file
        assert metric("hubkeeper_watcher_nginx_config_repairs_total", hub="a") == [2.0]
    finally:
        load.stop()


def test_no_automatic_fail_back_and_no_second_failover_within_the_hold_time(
    stack: Stack,
) -> None:
    container_id = with_alice(stack)
    kill_hub_and_proxy(stack, "a")
    assert_failed_over_keeping_alice(stack, container_id)

    hubctl.start(stack.config, stack.config_path, "a")  # the old hub comes back
    wait_for_alert(stack, "HubkeeperStrayHubFenced", timeout=60)
    wait_for(lambda: running_hubs(stack.config_path) == {"b"}, 30, "hub a fenced again")
    assert stack.nginx.live() == ("b", 2)

    kill_hub_and_proxy(stack, "b")  # b flaps within the hold time
    wait_for_alert(stack, "HubkeeperAllHubsDown", timeout=30)
    assert stack.nginx.live() == ("b", 2)
    assert len(state(stack)["failover_times"]) == 1


def test_a_watcher_killed_mid_failover_finishes_it_on_restart(stack: Stack) -> None:
    container_id = with_alice(stack)
    kill_hub_and_proxy(stack, "a")

    def starting() -> bool:
        step = state(stack).get("step")
        return bool(step and step["phase"] == "starting")

    wait_for(starting, 30, "the watcher to start hub b", interval=0.01)
    stack.watcher_process.kill()  # on purpose: the test starts it again itself
    assert state(stack)["active"] == "a" and stack.nginx.live() == ("a", 1)

    stack.watcher_process = stack.start_watcher()
    assert_failed_over_keeping_alice(stack, container_id)
    assert running_hubs(stack.config_path) == {"b"}
    assert state(stack)["step"] is None


def watcher_events(stack: Stack, name: str) -> list[dict]:
    lines = (stack.logs / "watcher.log").read_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    return [event for event in events if event.get("event") == name]


def canary_events(stack: Stack) -> list[dict]:
    return watcher_events(stack, "spawn_canary")


@pytest.mark.parametrize("stack", [{"canary_interval": 3.0, "canary_timeout": 60.0}], indirect=True)
def test_spawn_canary_starts_and_stops_a_real_server(stack: Stack) -> None:
    wait_for(lambda: any(e["ok"] for e in canary_events(stack)), 60, "a spawn canary")
    assert "hubkeeper_watcher_canary_success 1.0" in watcher_get(stack, "/metrics").text
    # stopped again (the next canary may start one 3 s later: wait for the gap between them)
    wait_for(lambda: user_containers(stack, stack.config.watcher.canary_user) == [], 30,
             "the canary's server to be stopped and removed")  # fmt: skip


@pytest.mark.parametrize("stack", [{"canary_interval": 3.0, "canary_timeout": 0.5}], indirect=True)
def test_a_failing_spawn_canary_pages_but_never_fails_over(stack: Stack) -> None:
    alert = wait_for_alert(stack, "HubkeeperSpawnCanaryFailed", timeout=60)
    assert alert["labels"]["hub"] == "a"
    assert "not ready within" in alert["annotations"]["description"]
    assert state(stack)["active"] == "a" and state(stack)["failover_times"] == []
    assert stack.nginx.live() == ("a", 1)
