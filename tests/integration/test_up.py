"""The README's run command end to end: `hubkeeper up` brings the whole service up, a
failover is seen by users, on-call and ops, and Ctrl-C (SIGTERM) leaves no process behind."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from hubkeeper.config import HubClientConfig, Secret
from hubkeeper.deploy import hubctl
from hubkeeper.deploy.stack import http_ok, wait_for
from hubkeeper.hubapi import HubClient
from hubkeeper.loader import load

READY_LINE = "Ctrl-C stops everything."


def processes_of(workdir: Path, elasticsearch_port: int | None) -> set[int]:
    """PIDs whose command line or environment names the stack's folder or its ES port."""
    markers = [str(workdir).encode()]
    if elasticsearch_port:
        markers.append(f"http.port={elasticsearch_port}".encode())
    found = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            text = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and int(proc.name) != os.getpid() and any(m in text for m in markers):
            found.add(int(proc.name))
    return found


@contextlib.contextmanager
def running_up(workdir: Path, *options: str) -> Iterator[subprocess.Popen]:
    """``hubkeeper up --random-ports OPTIONS`` until it says it is ready; SIGTERM after."""
    log = (workdir.parent / f"{workdir.name}.log").open("w")
    command = [sys.executable, "-m", "hubkeeper.cli", "up", "--workdir", str(workdir)]
    process = subprocess.Popen(
        [*command, "--random-ports", *options], stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    output = workdir.parent / f"{workdir.name}.log"
    try:
        wait_for(lambda: READY_LINE in output.read_text() or process.poll() is not None, 420, "up")
        assert process.poll() is None, output.read_text()[-3000:]
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(180)
        log.close()


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen, Path]]:
    workdir = tmp_path_factory.mktemp("up")
    with running_up(workdir) as process:
        yield process, workdir


def test_up_runs_on_elasticsearch_8(tmp_path: Path) -> None:
    """The local stack's shipper and daemons against an 8.x Elasticsearch."""
    workdir = tmp_path / "up8"
    workdir.mkdir()
    with running_up(workdir, "--elasticsearch", "8") as process:
        elasticsearch = load(workdir / "hubkeeper.toml").shipper.elasticsearch.hosts[0]
        nodes = requests.get(f"{elasticsearch}/_nodes", timeout=10).json()["nodes"]
        assert {node["version"] for node in nodes.values()} == {"8.19.21"}

        def shipped() -> bool:
            answer = requests.get(
                f"{elasticsearch}/hubkeeper-logs-*/_count",
                params={"q": "event.dataset:jupyterhub"}, timeout=10,
            ).json()  # fmt: skip
            return answer.get("count", 0) > 0

        wait_for(shipped, 90, "the hub's log in Elasticsearch 8", interval=2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(180) == 0


def status_of(workdir: Path, *options: str) -> str:
    command = [sys.executable, "-m", "hubkeeper.cli", "status", "--config",
               str(workdir / "hubkeeper.toml"), *options]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout


def test_a_killed_daemon_is_restarted_and_a_config_error_is_not(
    up: tuple[subprocess.Popen, Path],
) -> None:
    """Supervision as the systemd units say: the container exporter SIGKILLed is started
    again (RestartSec=2) and answers; the culler, killed while the config is broken, is
    started once, exits 2 and stays down (RestartPreventExitStatus=2). `hubkeeper status`
    shows both."""
    _, workdir = up
    config_path = workdir / "hubkeeper.toml"
    config = load(config_path)

    def daemon(name: str) -> dict:
        return json.loads((workdir / "supervised.json").read_text())["daemons"][name]

    exporter = daemon("export-containers")
    assert (exporter["state"], exporter["restarts"]) == ("running", 0)
    os.kill(exporter["pid"], signal.SIGKILL)
    wait_for(lambda: daemon("export-containers")["restarts"] == 1, 15, "the exporter's restart")
    restarted = daemon("export-containers")
    assert restarted["state"] == "running" and restarted["pid"] != exporter["pid"]
    assert restarted["last_exit"] == "SIGKILL"
    assert 1.9 <= restarted["last_restart_at"] - restarted["last_exit_at"] <= 5
    healthz = f"http://127.0.0.1:{config.containers.endpoint.port}/healthz"
    wait_for(lambda: http_ok(healthz), 60, "the restarted exporter's endpoint")

    good = config_path.read_text()
    config_path.write_text(good + '\n[logging]\nlevel = "loud"\n')  # exit 2 at start
    try:
        os.kill(daemon("cull")["pid"], signal.SIGKILL)
        wait_for(lambda: daemon("cull")["state"] == "failed", 30, "the culler's config error")
    finally:
        config_path.write_text(good)
    time.sleep(3)  # past RestartSec: it would have been started again by now
    culler = daemon("cull")
    assert (culler["state"], culler["restarts"], culler["last_exit"]) == ("failed", 1, "code 2")
    assert not Path(f"/proc/{culler['pid']}").exists()  # exited, reaped, not started again

    shown = status_of(workdir)
    assert "daemons (restarted on failure by the local stack's supervisor" in shown
    assert "  export-containers     running    restarts 1   last exit SIGKILL" in shown
    assert "  cull                  FAILED     restarts 1   last exit code 2" in shown
    assert "  ship-logs             running    restarts 0" in shown
    daemons = json.loads(status_of(workdir, "--json"))["daemons"]["daemons"]
    assert daemons["export-containers"] == daemon("export-containers")
    assert {name: d["restarts"] for name, d in daemons.items()} == {
        "watcher": 0, "export-containers": 1, "cull": 1, "ship-logs": 0, "watch-storage": 0,
    }  # fmt: skip


def test_failover_seen_end_to_end_then_nothing_left(up: tuple[subprocess.Popen, Path]) -> None:
    process, workdir = up
    config = load(workdir / "hubkeeper.toml")
    token = (workdir / "secrets/services/hubkeeper-operator.token").read_text().strip()
    client = HubClient(HubClientConfig(url=config.hub.url, token=Secret(token)))
    client.create_users(["alice"])
    client.start_server("alice")
    wait_for(lambda: client.user("alice")["servers"].get("", {}).get("ready"), 60, "alice")
    headers = {"Authorization": f"token {token}"}
    alice = f"{config.hub.url}/user/alice/api/status"
    assert requests.get(alice, headers=headers, timeout=10).status_code == 200

    pid = hubctl.launched_pid(config, "a")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # the hub; its orphaned proxy is fenced by the watcher

    def switched() -> bool:
        return "active hub   b   generation 2" in status_of(workdir)

    wait_for(switched, 60, "the failover in `hubkeeper status`")
    wait_for(
        lambda: requests.get(alice, headers=headers, timeout=10).status_code == 200,
        30, "alice through NGINX after the failover",
    )  # fmt: skip

    alertmanager = config.watcher.alertmanager_urls[0]

    def alerted() -> bool:
        alerts = requests.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
        return any(a["labels"]["alertname"] == "HubkeeperFailover" for a in alerts)

    wait_for(alerted, 60, "the failover alert in Alertmanager")

    elasticsearch = config.shipper.elasticsearch.hosts[0]

    def logged() -> bool:
        answer = requests.get(
            f"{elasticsearch}/hubkeeper-logs-*/_search",
            params={"q": 'message:"failover_done"'}, timeout=10,
        ).json()  # fmt: skip
        return answer.get("hits", {}).get("total", {}).get("value", 0) >= 1

    wait_for(logged, 90, "the failover in Elasticsearch", interval=2)

    es_port = int(elasticsearch.rsplit(":", 1)[1])
    before = processes_of(workdir, es_port)
    assert len(before) >= 8  # hubs, proxies, NGINX, daemons, Prometheus, Alertmanager, ES
    process.send_signal(signal.SIGTERM)
    assert process.wait(180) == 0
    time.sleep(1)
    assert processes_of(workdir, es_port) == set()
