"""Every alert rule caused for real. One stack: hubs a and b with the watcher, NGINX, the
container exporter, the culler, the shipper (into the real Elasticsearch) and the storage
watcher (on the storage tests' peers: a FUSE mount, nfs-ganesha, wsgidav, and a test
server of Owncloud's status.php in its documented format), Prometheus scraping all of them
every second, Alertmanager with the generated routing, a recording webhook as every
receiver. The rules are rendered with ``alerts.rule_time_scale`` 1/60 (alerts/render.py:
every ``for:``, range window, age and lag limit a sixtieth, other thresholds as written),
so a ``for: 10m`` waits 10 s. Each test causes several conditions at once, then checks for
each alert that Alertmanager holds it once (one group, its labels, a runbook that exists),
that it reached its receiver (criticals the pager, the rest the warnings webhook) and no
other, and that it resolves when the cause ends."""

import contextlib
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from hubkeeper.alerts.render import RUNBOOKS_DIR
from hubkeeper.deploy import hubctl
from hubkeeper.deploy.elasticsearch import Elasticsearch, log_store_overrides
from hubkeeper.deploy.stack import ManagedProcess, Stack, running_stack, to_toml, wait_for
from hubkeeper.hub.images import ALT_IMAGE, BASE_IMAGE, SINGLEUSER_IMAGE
from hubkeeper.hubapi import HubClient
from tests.integration.alerting import (
    Inbox,
    Receiver,
    alertmanager_alerts,
    alerts_section,
    http_receiver,
    pagerduty_events,
    prometheus_alerts,
    prometheus_query,
    smtp_server,
)
from tests.integration.helpers import start_frozen, user_containers
from tests.integration.shipping import dynamic_json_keys
from tests.integration.storage_peers import (
    NfsServer,
    StatusPhp,
    StorageFS,
    WebDav,
    nfs_server,
    status_php,
    storagefs,
    webdav,
)

NAME = "fire"
RUNBOOKS = "https://runbooks.lab.test/hubkeeper"
SCALE = 1 / 60
PAGER, WARNINGS = "/pagerduty", "/warnings"
# hub b stays a cold standby: nothing here is a failover. The canary on (the hubs grant its
# scopes at start) but an hour apart: the first is skipped while the hubs' health is unknown,
# so the stack's own watcher runs none; the canary test runs a watcher of its own.
WATCHER = {"interval": 1.0, "probe_timeout": 2.0, "startup_grace": 3600.0,
           "canary_interval": 3600.0}  # fmt: skip
STUCK_AFTER = 5.0  # the culler's pending_timeout
SLOW = 32.0  # seconds a frozen spawn is held: above JupyterHubSlowSpawns' 30 s threshold
SPOOL = 256 * 1024  # the shipper's spool limit, bytes
# [shipper] documents_buffer: the shipper's status every second fills it in 12 s, while
# Elasticsearch is stopped anyway (a container snapshot, every 10 s, holds one document per
# container and one of the hub: under 12 here)
FIGURES = 12
NFS_SUBNET = "10.254.21"  # this module's fixed private test subnet (the storage tests': .20)
OWNCLOUD_USER = "alice"


@dataclass
class StoragePeers:
    """What the storage watcher of the stack watches."""

    fs: StorageFS  # the notebook mount
    nfs: NfsServer
    status: StatusPhp  # Owncloud's status.php
    dav: WebDav  # Owncloud's WebDAV
    password_file: Path  # the monitoring user's app password

    def section(self) -> dict:
        """``[storage]``: the mount, the NFS server and Owncloud, checked every second."""
        return {
            "interval": 1.0, "timeout": 1.0,
            "mounts": [{"name": "notebooks", "path": str(self.fs.mountpoint)}],
            "nfs": [{"name": "filer", "host": self.nfs.address, "export": str(self.nfs.export),
                     "timeout": 2.0}],
            "owncloud": {"url": self.status.url, "user": OWNCLOUD_USER, "canary_path": "canary.txt",
                         "app_password_file": str(self.password_file),
                         "webdav_url": f"{self.dav.url}/remote.php/dav/files/{OWNCLOUD_USER}"},
        }  # fmt: skip


@dataclass
class Firing:
    stack: Stack
    receiver: Receiver
    es: Elasticsearch
    logs: Path  # the shipper's test sources: <logs>/<name>.log
    storage: StoragePeers

    @property
    def alertmanager(self) -> str:
        return self.stack.alertmanager_url

    def source(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def instance(self, section: str) -> str:
        """The scrape target of a daemon (``instance`` label)."""
        return f"127.0.0.1:{getattr(self.stack.config, section).endpoint.port}"


def overrides(
    workdir: Path, es: Elasticsearch, receiver: Receiver, smtp: int, key: str,
    storage: StoragePeers,
) -> dict:  # fmt: skip
    sections: dict = log_store_overrides(workdir, es.url)
    shipper = sections["shipper"]
    shipper.update(poll_interval=0.05, scan_interval=0.2, batch_max_wait=0.2, retry_backoff=0.2,
                   retry_backoff_max=1.0, spool_max_bytes=f"{SPOOL // 1024}K",
                   status_interval=1.0, documents_buffer=FIGURES)  # fmt: skip
    shipper["elasticsearch"].update(index_prefix=f"{NAME}-logs", dead_letter_index=f"{NAME}-dead",
                                    timeout=2.0)  # fmt: skip
    for source in ("conflict", "blocked", "flood"):
        shipper["sources"].append({"name": source, "parser": "json", "dataset": source,
                                   "paths": [str(workdir / "logs" / f"{source}.log")]})  # fmt: skip
    sections["containers"].update(reconcile_seconds=1.0, orphan_grace=0.0, resync_seconds=2.0,
                                  cache_seconds=0)  # fmt: skip
    sections["storage"].update(storage.section())
    # the hub polls its servers seldom: a removed container stays "ready" until stopped
    images = [SINGLEUSER_IMAGE, ALT_IMAGE, BASE_IMAGE]
    sections["jupyterhub"] = {"poll_interval": 600, "allowed_images": images}
    sections["culler"] = {"timeout": 3600.0, "cull_every": 1.0, "pending_timeout": STUCK_AFTER}
    sections["alerts"] = {**alerts_section(receiver, smtp, key), "rule_time_scale": SCALE,
                          "watchdog_interval": 1.0}  # fmt: skip
    return sections


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    yield from http_receiver()


@pytest.fixture(scope="module")
def inbox() -> Iterator[tuple[Inbox, int]]:
    yield from smtp_server()


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoragePeers]:
    base = tmp_path_factory.mktemp("fire-storage")
    password = secrets.token_urlsafe(12)
    (base / "app-password").write_text(password + "\n")
    with (
        storagefs(base) as fs,
        nfs_server(base, NFS_SUBNET) as nfs,
        status_php() as status,
        webdav(base, OWNCLOUD_USER, password) as dav,
    ):
        nfs.start()
        yield StoragePeers(fs, nfs, status, dav, base / "app-password")


@pytest.fixture(scope="module")
def firing(
    tmp_path_factory: pytest.TempPathFactory,
    elasticsearch: Elasticsearch,
    receiver: Receiver,
    inbox: tuple[Inbox, int],
    storage: StoragePeers,
) -> Iterator[Firing]:
    workdir = tmp_path_factory.mktemp("fire-stack")
    (workdir / "logs").mkdir()
    key = workdir / "pagerduty.key"
    key.write_text(secrets.token_hex(16) + "\n")
    with running_stack(
        workdir, hub_name=f"{NAME}-{secrets.token_hex(3)}", watcher=WATCHER, prometheus=True,
        daemons=("export-containers", "cull", "ship-logs", "watch-storage"),
        overrides=overrides(workdir, elasticsearch, receiver, inbox[1], str(key), storage),
    ) as stack:  # fmt: skip
        for job in ("hubkeeper-watcher", "hubkeeper-containers", "hubkeeper-culler",
                    "hubkeeper-shipper", "hubkeeper-storage", "jupyterhub",
                    "alertmanager"):  # fmt: skip
            wait_for(
                lambda j=job: prometheus_query(stack.prometheus_url, f'up{{job="{j}"}} == 1'),
                30, f"Prometheus to scrape {job}",
            )  # fmt: skip
        yield Firing(stack, receiver, elasticsearch, workdir / "logs", storage)


# --- what Alertmanager holds and what it sent ------------------------------------------


def notified(receiver: Receiver, name: str, status: str, severity: str | None = None) -> set[str]:
    """The receivers (paths) told that ``name`` is ``firing``/``resolved``."""
    paths = set()
    for request in list(receiver.requests):
        body = request.body
        if request.path == PAGER:  # PagerDuty Events v2: one event per group
            payload = body.get("payload", {})
            told = [(payload.get("class"), payload.get("severity"), body.get("event_action"))]
        else:  # Alertmanager's webhook: every alert of the group
            told = [
                (a["labels"]["alertname"], a["labels"].get("severity"), a["status"])
                for a in body.get("alerts", [])
            ]
        action = (
            {"firing": "trigger", "resolved": "resolve"}[status]
            if request.path == PAGER
            else status
        )
        if any(n == name and severity in (None, s) and a == action for n, s, a in told):
            paths.add(request.path)
    return paths


def active(run: Firing, name: str, /, **labels: str) -> list[dict]:
    """The alerts ``name`` with ``labels`` that Alertmanager holds and sends now."""
    return [
        alert
        for alert in alertmanager_alerts(run.alertmanager, name)
        if alert["status"]["state"] == "active" and labels.items() <= alert["labels"].items()
    ]


def fires_once(
    run: Firing, name: str, receiver: str, timeout: float, severity: str | None = None, /,
    **labels: str,
) -> dict:  # fmt: skip
    """Wait until ``receiver`` is told that ``name`` fires and Alertmanager holds it (a
    scrape that timed out under load can resolve it for a moment); then it is held once,
    in one group, with ``labels`` and its runbook, and no other receiver was told."""
    if severity is not None:
        labels["severity"] = severity

    held: list[dict] = []

    def firing() -> bool:
        told = receiver in notified(run.receiver, name, "firing", severity)
        held[:] = active(run, name, **labels) if told else []
        return bool(held)

    wait_for(firing, timeout, f"{name} to reach {receiver}", interval=0.5)
    assert len(held) == 1, [
        alert["labels"] for alert in alertmanager_alerts(run.alertmanager, name)
    ]
    (alert,) = held
    assert alert["annotations"]["runbook_url"] == f"{RUNBOOKS}/{name}.md"
    assert (RUNBOOKS_DIR / f"{name}.md").is_file()
    groups = requests.get(f"{run.alertmanager}/api/v2/alerts/groups", timeout=5).json()
    mine = [g for g in groups if alert["fingerprint"] in {a["fingerprint"] for a in g["alerts"]}]
    assert len(mine) == 1, mine
    assert notified(run.receiver, name, "firing", severity) == {receiver}
    return alert


def resolves(
    run: Firing, name: str, receiver: str, timeout: float, severity: str | None = None, /,
    **labels: str,
) -> None:  # fmt: skip
    """The receiver is told that ``name`` resolved and Alertmanager no longer holds it (at
    once: an alert that flapped before its cause ended was resolved once already)."""
    if severity is not None:
        labels["severity"] = severity

    def resolved() -> bool:
        told = receiver in notified(run.receiver, name, "resolved", severity)
        return told and not active(run, name, **labels)

    wait_for(resolved, timeout, f"{name} to resolve", interval=0.5)


def rule_fires(run: Firing, name: str, timeout: float, /, **labels: str) -> None:
    """Wait until Prometheus's rule ``name`` fires with ``labels``: for an alert the watcher
    also pushes, proof that the rule raises it too."""

    def firing() -> bool:
        alerts = prometheus_alerts(run.stack.prometheus_url, name)
        return any(labels.items() <= alert["labels"].items() for alert in alerts)

    wait_for(firing, timeout, f"the rule {name} to fire", interval=0.5)


def suppressed_by(run: Firing, name: str, timeout: float) -> list[str]:
    """Wait until Alertmanager holds ``name`` inhibited; the fingerprints inhibiting it."""

    def inhibited() -> list[dict]:
        return [
            a for a in alertmanager_alerts(run.alertmanager, name) if a["status"]["inhibitedBy"]
        ]

    wait_for(lambda: bool(inhibited()), timeout, f"{name} to be held inhibited", interval=0.5)
    return inhibited()[0]["status"]["inhibitedBy"]


def process(stack: Stack, name: str) -> ManagedProcess:
    (found,) = [p for p in stack.processes if p.name == name and p.running()]
    return found


def append(path: Path, *lines: str) -> None:
    with path.open("a") as out:
        out.writelines(line + "\n" for line in lines)


# --- user servers, spawns ----------------------------------------------------------------

MEM, OOM, CPU, GONE, FROZEN = (f"{NAME}-{what}" for what in ("mem", "oom", "cpu", "gone", "frz"))
GHOST = f"{NAME}-ghost"
# holds 95% of the container's memory limit (cgroup v2 or v1 files) in its working set
# (usage less inactive page cache, as container_memory_working_set_bytes counts it: on a
# cold page cache the server's start leaves some 30 MB of it charged to the container, and
# a usage of 95% was a working set of 89.9%, below the alert's 90%) until /tmp/stop exists
HOG = """
import os, time
def number(*paths):
    for path in paths:
        if os.path.exists(path):
            return int(open(path).read())
def inactive_file():
    for path, key in (("/sys/fs/cgroup/memory.stat", "inactive_file"),
                      ("/sys/fs/cgroup/memory/memory.stat", "total_inactive_file")):
        if os.path.exists(path):
            for line in open(path):
                name, value = line.split()
                if name == key:
                    return int(value)
    return 0
limit = number("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
usage = ("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory/memory.usage_in_bytes")
held = []
while number(*usage) - inactive_file() < 0.95 * limit:
    held.append(b"x" * (4 << 20))
while not os.path.exists("/tmp/stop"):
    time.sleep(0.2)
"""
BURN = "import os\nwhile not os.path.exists('/tmp/stop'): pass"
ALLOCATE = ["python3", "-c", "b'x' * (1536 * 2**20)"]  # three times the 512M limit


def start_all(client: HubClient, users: list[str]) -> None:
    for user in users:
        client.start_server(user)

    def ready() -> bool:
        return all((client.user(u)["servers"].get("") or {}).get("ready") for u in users)

    wait_for(ready, 90, f"servers of {users}", interval=0.5)


def test_user_server_alerts(firing: Firing) -> None:
    """A server whose container was removed behind the hub's back, a container with the
    hub's labels that no server owns, one server holding 95% of its memory limit, one
    OOM-killed (then twice more), one burning CPU above its quota, and a spawn frozen past
    the culler's pending_timeout that then completes after over 30 s."""
    stack, hub = firing.stack, firing.stack.config.jupyterhub.name
    client = stack.client()
    client.create_users([MEM, OOM, CPU, GONE, FROZEN])
    start_all(client, [MEM, OOM, CPU, GONE])
    start_frozen(stack, client, FROZEN)
    (frozen,) = user_containers(stack, FROZEN)
    # the frozen spawn goes on after SLOW seconds (within the hub's 60 s): it completes slowly
    thaw = threading.Timer(SLOW, frozen.unpause)
    thaw.start()
    (mem,), (oom,), (cpu,), (gone,) = (user_containers(stack, u) for u in (MEM, OOM, CPU, GONE))
    gone.remove(force=True)  # the hub still reports the server ready
    labels = stack.config.labels
    ghost = stack.docker.containers.run(
        BASE_IMAGE, ["sleep", "600"], detach=True, network_mode="host",
        name=f"{NAME}-ghost-{secrets.token_hex(3)}",
        labels={labels.user: GHOST, labels.server: "", labels.hub: hub},
    )  # fmt: skip
    mem.exec_run(["python3", "-c", HOG], detach=True)
    cpu.update(cpu_quota=10_000, cpu_period=100_000)  # 0.1 CPU: the burner costs little
    cpu.exec_run(["python3", "-c", BURN], detach=True)
    try:
        assert oom.exec_run(ALLOCATE).exit_code == 137  # SIGKILL by the OOM killer

        fires_once(firing, "UserServerOOMKilled", WARNINGS, 30, "warning", jupyterhub_user=OOM,
                   name=oom.name, hub=hub, image=SINGLEUSER_IMAGE)  # fmt: skip
        fires_once(firing, "HubkeeperServersWithoutContainer", WARNINGS, 40,
                   job="hubkeeper-containers", team="platform")  # fmt: skip
        fires_once(firing, "HubkeeperStuckPendingServers", WARNINGS, 40, job="hubkeeper-culler")
        fires_once(firing, "UserServerMemoryNearLimit", WARNINGS, 60, jupyterhub_user=MEM,
                   name=mem.name, hub=hub)  # fmt: skip
        # two more kills within the 30 minutes (30 s): the critical form pages, holds the warning
        for _ in range(2):
            assert oom.exec_run(ALLOCATE).exit_code == 137
        critical = fires_once(firing, "UserServerOOMKilled", PAGER, 30, "critical",
                              jupyterhub_user=OOM, name=oom.name)  # fmt: skip
        assert suppressed_by(firing, "UserServerOOMKilled", 10) == [critical["fingerprint"]]
        fires_once(firing, "HubkeeperOrphanContainers", WARNINGS, 60, job="hubkeeper-containers")
        thaw.join()
        wait_for(lambda: (client.user(FROZEN)["servers"].get("") or {}).get("ready"), 30,
                 "the frozen spawn to complete")  # fmt: skip
        resolves(firing, "HubkeeperStuckPendingServers", WARNINGS, 20)
        fires_once(firing, "JupyterHubSlowSpawns", WARNINGS, 40, hub="a")
        fires_once(firing, "UserServerCPUThrottled", WARNINGS, 60, jupyterhub_user=CPU,
                   name=cpu.name)  # fmt: skip
    finally:  # every cause ends
        for container in (mem, cpu):
            container.exec_run(["touch", "/tmp/stop"])
        ghost.remove(force=True)
        client.stop_server(GONE)
        wait_for(lambda: "" not in client.user(GONE)["servers"], 60, f"{GONE}'s server to stop")
    for name in ("HubkeeperServersWithoutContainer", "HubkeeperOrphanContainers",
                 "UserServerMemoryNearLimit", "UserServerCPUThrottled"):  # fmt: skip
        resolves(firing, name, WARNINGS, 40)
    resolves(firing, "UserServerOOMKilled", PAGER, 40, "critical")
    resolves(firing, "UserServerOOMKilled", WARNINGS, 30, "warning")
    resolves(firing, "JupyterHubSlowSpawns", WARNINGS, 40)


FAILING = [f"{NAME}-fail{n}" for n in range(6)]
GOOD = [f"{NAME}-good{n}" for n in range(2)]


def failed_spawn(stack: Stack, user: str) -> None:
    """A spawn of an allowed image that has no ``jupyterhub-singleuser``: Docker cannot
    start it, the hub counts an error (sent once: the hub client would retry a 500)."""
    token = stack.client().config.token.reveal()
    answer = requests.post(f"{stack.public_url}/hub/api/users/{user}/server",
                           json={"image": BASE_IMAGE}, headers={"Authorization": f"token {token}"},
                           timeout=60)  # fmt: skip
    assert answer.status_code >= 500, answer.text


def test_spawn_failure_alerts(firing: Firing) -> None:
    """Three failed spawns and no success: every spawn fails (the ratio alert is held by
    it); a success ends that, three more failures keep the ratio over 20%; a second
    success, and the failures age out."""
    stack = firing.stack
    client = stack.client()
    client.create_users(FAILING + GOOD)
    for user in FAILING[:3]:
        failed_spawn(stack, user)
    consecutive = fires_once(firing, "JupyterHubConsecutiveSpawnFailures", PAGER, 60, hub="a")
    assert suppressed_by(firing, "JupyterHubSpawnFailureRatio", 20) == [consecutive["fingerprint"]]
    assert notified(firing.receiver, "JupyterHubSpawnFailureRatio", "firing") == set()
    start_all(client, GOOD[:1])
    resolves(firing, "JupyterHubConsecutiveSpawnFailures", PAGER, 30)
    for user in FAILING[3:]:
        failed_spawn(stack, user)
    fires_once(firing, "JupyterHubSpawnFailureRatio", PAGER, 60, hub="a")
    start_all(client, GOOD[1:])  # a success within every window: no "none succeeds" again
    resolves(firing, "JupyterHubSpawnFailureRatio", PAGER, 40)
    assert active(firing, "JupyterHubConsecutiveSpawnFailures") == []


# --- the shipper ------------------------------------------------------------------------


class FloodStage(threading.Thread):
    """Holds the block Elasticsearch sets on indices when its disk passes the flood stage
    (items answered 429) and writes a line a second into them. Elasticsearch's disk
    monitor lifts the block within 30 s (the disk is not full): it is set again at once."""

    def __init__(self, es: Elasticsearch, pattern: str, source: Path) -> None:
        super().__init__(daemon=True)
        self.url, self.source = f"{es.url}/{pattern}/_settings", source
        self.halt = threading.Event()
        self.block(True)

    def block(self, blocked: bool) -> None:
        body = {"index.blocks.read_only_allow_delete": blocked or None}
        requests.put(self.url, json=body, timeout=30).raise_for_status()

    def run(self) -> None:
        number = 0
        while not self.halt.wait(0.5):
            self.block(True)
            number += 1
            if number % 2 == 0:
                append(self.source, f'{{"event": "refused", "number": {number}}}')

    def stop(self) -> int:
        """Lift the block; the lines written meanwhile."""
        self.halt.set()
        self.join(10)
        self.block(False)
        return self.source.read_text().count('"refused"')


def indexed(es: Elasticsearch, pattern: str) -> int:
    answer = requests.get(f"{es.url}/{pattern}/_count", timeout=30)
    return answer.json().get("count", 0) if answer.status_code == 200 else 0


def test_shipper_alerts(firing: Firing) -> None:
    """A mapping conflict (dead letter); Elasticsearch answering items 429 (the flood-stage
    block: a page at once, a warning later); Elasticsearch stopped (SIGSTOP) while lines
    keep coming until the spool is full: the lines wait over 5 s (5 minutes on the rules'
    clock), and the shipper's status documents, one a second, overflow their buffer of
    FIGURES."""
    es, prefix = firing.es, f"{NAME}-logs"
    dynamic_json_keys(es, prefix, "conflict")
    append(firing.source("conflict"), '{"event": "probe", "probe_value": 1}',
           '{"event": "probe", "probe_value": {"nested": 1}}')  # fmt: skip
    fires_once(firing, "HubkeeperShipperDeadLetters", WARNINGS, 60, team="logging",
               instance=firing.instance("shipper"))  # fmt: skip

    append(firing.source("blocked"), '{"event": "first"}')
    wait_for(lambda: indexed(es, f"{prefix}-blocked-*") == 1, 30, "the first line")
    flood = FloodStage(es, f"{prefix}-blocked-*", firing.source("blocked"))
    flood.start()
    try:
        fires_once(firing, "HubkeeperElasticsearchFloodStage", PAGER, 30, "critical",
                   team="logging", instance=firing.instance("shipper"))  # fmt: skip
        fires_once(firing, "HubkeeperShipperRejected", WARNINGS, 60, team="logging",
                   instance=firing.instance("shipper"))  # fmt: skip
    finally:
        refused = flood.stop()
    wait_for(lambda: indexed(es, f"{prefix}-blocked-*") == 1 + refused, 30, "the refused lines")
    resolves(firing, "HubkeeperElasticsearchFloodStage", PAGER, 40, "critical")
    resolves(firing, "HubkeeperShipperRejected", WARNINGS, 40)
    resolves(firing, "HubkeeperShipperDeadLetters", WARNINGS, 40)

    assert es.pid is not None
    os.kill(es.pid, signal.SIGSTOP)
    try:
        line = '{"event": "flood", "padding": "' + "x" * 1000 + '"}'
        append(firing.source("flood"), *[line] * (SPOOL // 1000 + 20))
        fires_once(firing, "HubkeeperShipperOutputDown", PAGER, 60, team="logging")
        spool = fires_once(firing, "HubkeeperShipperSpoolFilling", PAGER, 30, "critical")
        assert suppressed_by(firing, "HubkeeperShipperSpoolFilling", 10) == [spool["fingerprint"]]
        # every source is behind (one alert each): the one written to here is checked
        fires_once(firing, "HubkeeperShipperLagging", WARNINGS, 30, source="flood",
                   team="logging", instance=firing.instance("shipper"))  # fmt: skip
        fires_once(firing, "HubkeeperFiguresDropped", WARNINGS, 40, job="hubkeeper-shipper",
                   team="logging", instance=firing.instance("shipper"))  # fmt: skip
    finally:
        os.kill(es.pid, signal.SIGCONT)
    resolves(firing, "HubkeeperShipperOutputDown", PAGER, 60)
    resolves(firing, "HubkeeperShipperSpoolFilling", PAGER, 60, "critical")
    resolves(firing, "HubkeeperShipperLagging", WARNINGS, 60)
    resolves(firing, "HubkeeperFiguresDropped", WARNINGS, 60)


# --- the daemons and Alertmanager -------------------------------------------------------


# A site's own rule that Prometheus cannot evaluate: a target's `up` and
# `scrape_duration_seconds` share every label but the name, which an alert drops, so both
# become the same alert ("vector contains metrics with the same labelset after applying
# alert labels") at every evaluation.
SITE_RULES = """groups:
  - name: site
    rules:
      - alert: SiteShipperScrape
        expr: '{__name__=~"up|scrape_duration_seconds", job="hubkeeper-shipper"} >= 0'
"""


def reload_prometheus(stack: Stack) -> None:
    """Prometheus re-reads its config and rule files on SIGHUP."""
    process(stack, "prometheus").popen.send_signal(signal.SIGHUP)


def test_daemon_and_alertmanager_alerts(firing: Firing) -> None:
    """The watcher and the container exporter stopped; the culler restarted with a token
    the hub refuses; the dead-man's switch rejecting the Watchdog (HTTP 400); a rule file
    added beside the generated ones whose rule fails at every evaluation."""
    stack = firing.stack
    site = stack.alerting.rules[0].with_name("site.yml")
    site.write_text(SITE_RULES)
    reload_prometheus(stack)
    firing.receiver.refused.add("/watchdog")
    process(stack, "cull").stop()
    argv = [sys.executable, "-m", "hubkeeper.cli", "cull", "--config", str(stack.config_path)]
    stack.spawn("cull", argv, env={"HUBKEEPER_CULLER_HUB_TOKEN": secrets.token_hex(16)})
    process(stack, "watcher").stop()
    process(stack, "export-containers").stop()
    try:
        fires_once(firing, "HubkeeperWatcherDown", PAGER, 30, job="hubkeeper-watcher")
        fires_once(firing, "HubkeeperTargetDown", WARNINGS, 30, job="hubkeeper-containers")
        fires_once(firing, "HubkeeperCullerErrors", WARNINGS, 60,
                   instance=firing.instance("culler"))  # fmt: skip
        fires_once(firing, "AlertmanagerNotificationsFailing", PAGER, 60, integration="webhook",
                   instance=firing.stack.alertmanager_url.removeprefix("http://"))  # fmt: skip
        fires_once(firing, "PrometheusRuleEvaluationFailures", WARNINGS, 30,
                   rule_group=f"{site};site", team="platform",
                   instance=stack.prometheus_url.removeprefix("http://"))  # fmt: skip
    finally:
        site.unlink()
        reload_prometheus(stack)
        firing.receiver.refused.clear()
        stack.start_daemon("watch-hubs")
        stack.start_daemon("export-containers")
        process(stack, "cull").stop()
        stack.start_daemon("cull")
    resolves(firing, "HubkeeperWatcherDown", PAGER, 30)
    resolves(firing, "HubkeeperTargetDown", WARNINGS, 30, job="hubkeeper-containers")
    resolves(firing, "HubkeeperCullerErrors", WARNINGS, 60)
    resolves(firing, "AlertmanagerNotificationsFailing", PAGER, 60)
    resolves(firing, "PrometheusRuleEvaluationFailures", WARNINGS, 30)


# --- the hub's event loop ------------------------------------------------------------------


class LockedDatabase(threading.Thread):
    """Another process's write transaction holds the hub's SQLite database for 0.6 s in
    every second (as a backup or a second writer would), while a client keeps asking the
    hub for its users: each of those requests waits for the lock in the hub's event loop."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.database = stack.workdir / "jupyterhub.sqlite"
        self.users = f"{stack.public_url}/hub/api/users"
        self.token = stack.client().config.token.reveal()
        self.halt = threading.Event()

    def run(self) -> None:
        asking = threading.Thread(target=self.ask, daemon=True)
        asking.start()
        database = sqlite3.connect(self.database, timeout=10, isolation_level=None)
        try:
            while not self.halt.wait(0.4):
                database.execute("BEGIN EXCLUSIVE")
                time.sleep(0.6)
                database.execute("COMMIT")
        finally:
            database.close()
            asking.join(15)

    def ask(self) -> None:
        headers = {"Authorization": f"token {self.token}"}
        while not self.halt.wait(0.2):
            with contextlib.suppress(requests.RequestException):
                requests.get(self.users, headers=headers, timeout=10)

    def stop(self) -> None:
        self.halt.set()
        self.join(20)


def test_event_loop_alert(firing: Firing) -> None:
    """Requests that wait 0.6 s for the locked database block the hub's event loop for
    that long, in over 1% of its 50 ms ticks: the p99 is above 0.5 s until the lock ends."""
    locked = LockedDatabase(firing.stack)
    locked.start()
    try:
        fires_once(firing, "JupyterHubEventLoopLagging", WARNINGS, 60, hub="a")
    finally:
        locked.stop()
    resolves(firing, "JupyterHubEventLoopLagging", WARNINGS, 30)


# --- the watcher's failover limits --------------------------------------------------------


def watcher_with(
    stack: Stack, name: str, commands: dict[str, list[str]], nginx: dict | None = None,
    **watcher: object,
) -> Path:  # fmt: skip
    """Stop the watcher; run one on a copy of the stack's config with ``commands``
    (``"<hub>.<key>"``, e.g. ``"a.stop_command"``), ``[nginx]`` and ``[watcher]`` settings
    replaced, re-sending its alerts every 2 s (they end 8 s after it stops)."""
    data = tomllib.loads(stack.config_path.read_text())
    hubs = {hub["name"]: hub for hub in data["jupyterhub"]["instances"]}
    for key, command in commands.items():
        hub, setting = key.split(".")
        hubs[hub][setting] = command
    data["nginx"].update(nginx or {})
    data["watcher"].update(startup_grace=0.0, alert_resend_interval=2.0, **watcher)
    path = stack.config_path.with_name(f"{name}.toml")
    path.write_text(to_toml(data))
    process(stack, "watcher").stop()
    argv = [sys.executable, "-m", "hubkeeper.cli", "watch-hubs", "--config", str(path)]
    watcher_process = stack.spawn("watcher", argv)
    healthz = f"http://127.0.0.1:{stack.config.watcher.endpoint.port}/healthz"
    stack.until_ready(watcher_process, healthz, 60)
    return path


def failover_to(stack: Stack, hub: str) -> subprocess.CompletedProcess[str]:
    """``hubkeeper failover --to HUB``: handed to the running watcher, or done by itself."""
    return subprocess.run(
        [sys.executable, "-m", "hubkeeper.cli", "failover", "--to", hub, "--config",
         str(stack.config_path)], capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_fence_failed_and_frozen_failover_alerts(firing: Firing, tmp_path: Path) -> None:
    """A planned switch to b whose NGINX template adds a listen another process holds
    (``nginx -t`` passes it) is refused before anything stops (HubkeeperNginxReloadFailed).
    The template fixed, the active hub hangs (SIGSTOP) and its stop command does not stop
    it: the failover stops at the fence (HubkeeperFenceFailed) and, the cap of two attempts
    an hour reached, the watcher freezes (HubkeeperFailoverFrozen). The operator's way out:
    the hub continued, a planned switch to b with the real stop command (it lifts the
    freeze), the watcher back."""
    stack = firing.stack
    template, fixed = tmp_path / "nginx.conf.template", stack.nginx.template.read_text()
    public = "listen {{listen}}:{{public_port}};"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        busy = f"\n        listen 127.0.0.1:{squatter.getsockname()[1]};"
        template.write_text(fixed.replace(public, public + busy))
        watcher_with(stack, "unfenceable", {"a.stop_command": ["true"]},
                     {"template": str(template)}, max_failovers_per_hour=2, hold_time=0.0,
                     fence_timeout=2.0)  # fmt: skip
        refused = failover_to(stack, "b")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "failed; active hub a" in refused.stdout
    rule_fires(firing, "HubkeeperNginxReloadFailed", 30, hub="a", team="platform")
    fires_once(firing, "HubkeeperNginxReloadFailed", PAGER, 30, hub="a", team="platform")
    template.write_text(fixed)
    hub = hubctl.launched_pid(stack.config, "a")
    assert hub is not None
    os.killpg(hub, signal.SIGSTOP)  # its proxy, in a session of its own, still answers
    try:
        for name in ("HubkeeperFenceFailed", "HubkeeperFailoverFrozen"):
            rule_fires(firing, name, 60, hub="a", team="platform")
            fires_once(firing, name, PAGER, 30, hub="a", team="platform")
    finally:
        os.killpg(hub, signal.SIGCONT)
    process(stack, "watcher").stop()
    switch = failover_to(stack, "b")
    assert switch.returncode == 0, switch.stdout + switch.stderr
    stack.start_daemon("watch-hubs")
    resolves(firing, "HubkeeperFailoverFrozen", PAGER, 30)
    resolves(firing, "HubkeeperFenceFailed", PAGER, 30)
    # the watcher that refused the switch is gone, and with it its count and its push; hub
    # a's alert all along, never one more (another group, another incident) for b, active now
    resolves(firing, "HubkeeperNginxReloadFailed", PAGER, 30)
    pages = pagerduty_events(firing.receiver, "HubkeeperNginxReloadFailed", "trigger")
    assert len({page["dedup_key"] for page in pages}) == 1


def test_no_healthy_standby_alert(firing: Firing) -> None:
    """The active hub dies and the standby's start command fails: the watcher has no
    standby left (HubkeeperNoHealthyStandby, pushed) until the standby may be tried again;
    the operator brings the hub back and runs the watcher with the working command."""
    stack = firing.stack
    live = stack.nginx.live()
    assert live is not None
    serving = live[0]
    (standby,) = [name for name in stack.instance_names if name != serving]
    watcher_with(stack, "no-standby", {f"{standby}.start_command": ["false"]}, hold_time=0.0,
                 max_failovers_per_hour=10, standby_retry_after=15.0,
                 start_timeout=5.0)  # fmt: skip
    proxy = hubctl.proxy_pid(stack.config, serving)
    hub = hubctl.launched_pid(stack.config, serving)
    assert proxy is not None and hub is not None
    os.killpg(hub, signal.SIGKILL)
    os.kill(proxy, signal.SIGKILL)
    fires_once(firing, "HubkeeperNoHealthyStandby", PAGER, 60, hub=serving, team="platform")
    process(stack, "watcher").stop()
    stack.start_hub(serving)
    stack.start_daemon("watch-hubs")
    resolves(firing, "HubkeeperNoHealthyStandby", PAGER, 40)


def test_spawn_canary_alert(firing: Firing) -> None:
    """The watcher's spawn canary (a real server started and stopped through NGINX) with a
    timeout no spawn here meets, 0.5 s: every canary fails (HubkeeperSpawnCanaryFailed)
    and nothing fails over; the watcher run with a timeout spawns meet, a canary succeeds
    and the alert resolves."""
    stack = firing.stack
    live = stack.nginx.live()
    assert live is not None
    watcher_with(stack, "slow-canary", {}, canary_interval=1.0, canary_timeout=0.5)
    rule_fires(firing, "HubkeeperSpawnCanaryFailed", 60, hub=live[0], team="platform")
    fires_once(firing, "HubkeeperSpawnCanaryFailed", PAGER, 30, hub=live[0], team="platform")
    assert stack.nginx.live() == live
    watcher_with(stack, "canary", {}, canary_interval=1.0, canary_timeout=60.0)
    succeeded = "hubkeeper_watcher_canary_success == 1"
    wait_for(lambda: prometheus_query(stack.prometheus_url, succeeded), 60, "a canary to succeed")
    resolves(firing, "HubkeeperSpawnCanaryFailed", PAGER, 30)
    process(stack, "watcher").stop()
    stack.start_daemon("watch-hubs")


# --- notebook storage ------------------------------------------------------------------------


def test_storage_alerts(firing: Firing) -> None:
    """The notebook filesystem full and out of inodes; the NFS server stopped; Owncloud in
    maintenance (not down: the maintenance alert only); then the filesystem hangs and
    Owncloud's WebDAV server is stopped."""
    peers, team = firing.storage, {"team": "platform"}
    watcher = {"job": "hubkeeper-storage", "instance": firing.instance("storage"), **team}
    peers.fs.mode("full,no_inodes")
    peers.nfs.stop()
    peers.status.document["maintenance"] = True
    try:
        fires_once(firing, "HubkeeperNFSServerDown", PAGER, 30, server="filer", **team)
        fires_once(firing, "HubkeeperStorageSpaceLow", WARNINGS, 40, mount="notebooks", **team)
        fires_once(firing, "HubkeeperStorageInodesLow", WARNINGS, 40, mount="notebooks", **team)
        fires_once(firing, "HubkeeperOwncloudMaintenance", WARNINGS, 40, **watcher)
        assert notified(firing.receiver, "HubkeeperOwncloudDown", "firing") == set()
        peers.fs.mode("hang")  # the free space last read stays
        peers.status.document["maintenance"] = False
        peers.dav.stop()
        fires_once(firing, "HubkeeperStorageHung", PAGER, 30, mount="notebooks", **watcher)
        fires_once(firing, "HubkeeperOwncloudDown", PAGER, 30, **watcher)
        resolves(firing, "HubkeeperOwncloudMaintenance", WARNINGS, 30)
    finally:  # every cause ends
        peers.fs.mode("ok")
        peers.status.document["maintenance"] = False
        if peers.dav.process is None:
            peers.dav.start()
        peers.nfs.start()
    for name in ("HubkeeperNFSServerDown", "HubkeeperStorageHung", "HubkeeperOwncloudDown"):
        resolves(firing, name, PAGER, 30)
    for name in ("HubkeeperStorageSpaceLow", "HubkeeperStorageInodesLow"):
        resolves(firing, name, WARNINGS, 30)
