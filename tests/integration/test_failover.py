"""Hub failover with two real hubs on one SQLite database, real user containers, a real
NGINX, a real Alertmanager, and the watcher running as its own process."""

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from hubkeeper import prtg
from hubkeeper.deploy import hubctl
from hubkeeper.deploy.stack import Stack, running_stack, wait_for
from hubkeeper.nginx import TEMPLATE, NginxError
from tests.integration.helpers import (
    HubCensus,
    running_hubs,
    server_status,
    start_and_wait,
    user_containers,
)

WATCHER = {
    "interval": 0.5,
    "probe_timeout": 0.5,
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


def hub_pid(stack: Stack, name: str) -> int:
    pid = hubctl.launched_pid(stack.config, name)
    assert pid is not None, f"hub {name} is not running"
    return pid


def kill_hub_and_proxy(stack: Stack, name: str) -> None:
    proxy = hubctl.proxy_pid(stack.config, name)
    assert proxy is not None, f"the proxy of hub {name} is not running"
    os.killpg(hub_pid(stack, name), signal.SIGKILL)
    os.kill(proxy, signal.SIGKILL)


def with_alice(stack: Stack) -> str:
    """Start alice's server; return its container id."""
    client = stack.client()
    client.create_users(["alice"])
    start_and_wait(client, "alice")
    (container,) = user_containers(stack, "alice")
    assert server_status(stack, "alice").status_code == 200
    return container.id


def assert_failed_over_keeping_alice(stack: Stack, container_id: str) -> None:
    wait_for(lambda: state(stack)["active"] == "b", 60, "the failover to hub b")
    assert stack.nginx.served_generation() == 2
    assert stack.nginx.live() == ("b", 2)
    wait_for(lambda: server_status(stack, "alice").status_code == 200, 30, "alice via hub b")
    assert [c.id for c in user_containers(stack, "alice")] == [container_id]
    assert state(stack)["last_failover"]["reason"] == "active_down"
    alert = wait_for_alert(stack, "HubkeeperFailover")
    assert alert["labels"] == {
        "alertname": "HubkeeperFailover", "hub": "b", "severity": "warning", "team": "platform",
    }  # fmt: skip
    assert alert["annotations"]["description"].startswith("Hub a failed (active_down); b took")
    assert alert["annotations"]["runbook_url"].endswith("/HubkeeperFailover.md")


def failover_with_census(stack: Stack, container_id: str, signum: signal.Signals) -> None:
    census = HubCensus(stack.config_path)
    census.start()
    try:
        if signum == signal.SIGSTOP:
            os.kill(hub_pid(stack, "a"), signum)  # the hub hangs; its proxy still accepts
        else:
            kill_hub_and_proxy(stack, "a")
        assert_failed_over_keeping_alice(stack, container_id)
    finally:
        census.stop()
    assert census.most == 1, f"two hubs ran at once: {census.seen}"
    assert census.seen[-1] == {"b"}


def test_kill_9_of_the_active_hub_fails_over_and_keeps_user_servers(stack: Stack) -> None:
    failover_with_census(stack, with_alice(stack), signal.SIGKILL)

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


def test_a_hung_hub_is_detected_through_timeouts(stack: Stack) -> None:
    failover_with_census(stack, with_alice(stack), signal.SIGSTOP)


@pytest.mark.parametrize("stack", [{"start_timeout": 15.0}], indirect=True)
def test_standby_that_cannot_start_leaves_nginx_unchanged_and_pages(stack: Stack) -> None:
    standby = stack.config.jupyterhub.instance("b")
    with socket.socket() as squatter:  # hub b's proxy cannot bind its port
        squatter.bind(("127.0.0.1", standby.proxy_port))
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
    os.killpg(stack.watcher_process.pid, signal.SIGKILL)
    assert state(stack)["active"] == "a" and stack.nginx.live() == ("a", 1)

    stack.watcher_process = stack.start_watcher()
    assert_failed_over_keeping_alice(stack, container_id)
    assert running_hubs(stack.config_path) == {"b"}
    assert state(stack)["step"] is None


def canary_events(stack: Stack) -> list[dict]:
    lines = (stack.logs / "watcher.log").read_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    return [event for event in events if event.get("event") == "spawn_canary"]


@pytest.mark.parametrize("stack", [{"canary_interval": 3.0, "canary_timeout": 60.0}], indirect=True)
def test_spawn_canary_starts_and_stops_a_real_server(stack: Stack) -> None:
    wait_for(lambda: any(e["ok"] for e in canary_events(stack)), 60, "a spawn canary")
    port = stack.config.watcher.endpoint.port
    metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert "hubkeeper_watcher_canary_success 1.0" in metrics
    assert user_containers(stack, stack.config.watcher.canary_user) == []  # stopped again


@pytest.mark.parametrize("stack", [{"canary_interval": 3.0, "canary_timeout": 0.5}], indirect=True)
def test_a_failing_spawn_canary_pages_but_never_fails_over(stack: Stack) -> None:
    alert = wait_for_alert(stack, "HubkeeperSpawnCanaryFailed", timeout=60)
    assert alert["labels"]["hub"] == "a"
    assert "not ready within" in alert["annotations"]["description"]
    assert state(stack)["active"] == "a" and state(stack)["failover_times"] == []
    assert stack.nginx.live() == ("a", 1)
