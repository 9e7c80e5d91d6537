"""Chaos soak: the whole local service under simulated users while faults are caused at
random (seeded), then the books.

The service is the stack ``hubkeeper up`` runs (hubs a and b, NGINX, the Docker engine,
every daemon supervised as the systemd units would, Prometheus, Alertmanager and a real
Elasticsearch), with a short idle timeout so the culler has work, and every alert routed
to a recording webhook receiver.

Users (threads) log in, start servers (some named, some of the alternative image), print
log lines from inside their containers (ordinary lines, JSON lines, tracebacks, long lines,
JSON lines whose clock runs backwards), each line carrying a unique id, reach their servers
through NGINX as a browser would, go idle (the culler takes them), come back and stop.
A request loop asks the hub API through NGINX ten times a second. Faults, from the seed,
may overlap: ``hub_kill`` (SIGKILL of the active hub), ``hub_stop`` (SIGSTOP of it),
``proxy_kill`` and ``proxy_stop`` (the same to the active hub's proxy),
``failover_watcher_kill`` (the active hub, then the watcher once the failover began),
``daemon_kill`` (SIGKILL of a supervised daemon, the watcher included, even mid-failover),
``daemon_stop`` (SIGSTOP of a daemon with a watchdog: the supervisor aborts and restarts
it), ``elasticsearch_stop`` (stopped, started again ``es_down`` s later),
``elasticsearch_flood`` (past its flood-stage disk watermark ``es_down`` s: writes refused
429), ``oom`` (a process of a user's server allocating past the limit), ``orphan`` (a
container with the hub's labels that no server owns), ``nginx_broken`` (NGINX's live
config broken by hand, then reloaded), ``spool_full`` (the filesystem under the shipper's
state folder, a small tmpfs, filled ``es_down`` s), ``docker_restart`` (the soak's own
Docker engine, run with live-restore as the README advises, stopped 20 s and started).

The books, in the last line (JSON): log lines written, lost and duplicated in
Elasticsearch; requests failed, in each fault's window; moments with two hubs on the
database; orphans left after the grace period; active users culled; for each fault the
alert that should reach on-call, whether it did and when it resolved; daemon restarts; the
time each fault took to heal.

    .venv/bin/python tests/bench/soak.py [--minutes 20] [--users 24] [--seed 7]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hubkeeper.config import DockerConfig  # noqa: E402
from hubkeeper.deploy import hubctl  # noqa: E402
from hubkeeper.deploy.elasticsearch import (  # noqa: E402
    Elasticsearch,
    flood_stage,
    log_store_overrides,
    running_elasticsearch,
)
from hubkeeper.deploy.engine import OwnEngine  # noqa: E402
from hubkeeper.deploy.stack import (  # noqa: E402
    DAEMONS,
    Stack,
    docker_client,
    running_stack,
    wait_for,
)
from hubkeeper.deploy.supervise import unit_watchdog_sec  # noqa: E402
from hubkeeper.hub.images import ALT_IMAGE, BASE_IMAGE, ensure_images  # noqa: E402
from hubkeeper.hubapi import HubAPIError, HubClient  # noqa: E402
from hubkeeper.status import daemon_metrics  # noqa: E402
from tests.bench.needs import docker_engine  # noqa: E402
from tests.integration.alerting import Receiver, webhooks_section  # noqa: E402
from tests.integration.helpers import (  # noqa: E402
    HubCensus,
    Load,
    break_nginx_config,
    nginx_config_healed,
)
from tests.integration.shipping import search, user_process  # noqa: E402
from tests.integration.smallfs import SmallFS, small_tmpfs  # noqa: E402

#: faults that end in a failover
HUB_FAULTS = ("hub_kill", "hub_stop", "proxy_kill", "proxy_stop", "failover_watcher_kill")
FAULT_KINDS = (
    *HUB_FAULTS, "daemon_kill", "daemon_stop", "elasticsearch_stop", "oom", "orphan",
    "nginx_broken", "elasticsearch_flood", "spool_full", "docker_restart",
)  # fmt: skip
#: the alert each fault must bring to on-call (None: none is due, e.g. a restart in seconds)
EXPECTED_ALERT = {
    "hub_kill": "HubkeeperFailover",
    "hub_stop": "HubkeeperFailover",
    "proxy_kill": "HubkeeperFailover",  # the probes go through the proxy too
    "proxy_stop": "HubkeeperFailover",
    "failover_watcher_kill": "HubkeeperFailover",
    "daemon_kill": None,
    "daemon_stop": None,  # the watchdog restarts it before its target has been down 5m
    "elasticsearch_stop": None,
    "elasticsearch_flood": "HubkeeperElasticsearchFloodStage",
    "oom": "UserServerOOMKilled",
    "orphan": None,  # the culler removes it after ORPHAN_GRACE, long before the alert's 30m
    "nginx_broken": "HubkeeperNginxConfigRepaired",
    "spool_full": "HubkeeperShipperSpoolUnwritable",
    "docker_restart": None,  # HubkeeperDockerEngineDown waits 2m; live-restore keeps servers
}
ENGINE_DOWN = 20.0  # seconds the Docker engine stays down (docker_restart)
SPOOL_FS = "64m"  # the tmpfs under the shipper's state folder (spool_full)
SPOOL_MAX = "32M"  # its spool's limit: room for it, the registry and a 16 MiB segment
#: the daemons a daemon_stop may freeze: those whose unit has a watchdog to notice it
WATCHDOGGED = tuple(sorted(c for c in DAEMONS if unit_watchdog_sec(c) is not None))


def expected_alert(kind: str, target: str) -> str | None:
    """The alert due for a fault; a frozen watcher pages itself (HubkeeperWatcherDown after
    1m, before its 2m watchdog restarts it)."""
    if kind == "daemon_stop" and target == "watch-hubs":
        return "HubkeeperWatcherDown"
    return EXPECTED_ALERT[kind]


IDLE_TIMEOUT = 40.0  # the culler's, seconds
ACTIVITY_INTERVAL = 5  # the hub's last_activity_interval: how late it learns of a request
ORPHAN_GRACE = 30.0  # the culler's, seconds

LINE_KINDS = ("plain", "json", "traceback", "long", "backwards")


# -- the plan (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    kind: str
    at: float  # seconds after the start of the load
    target: str = ""  # a daemon, for daemon_kill


def plan(seed: int, seconds: float, kinds: tuple[str, ...] = FAULT_KINDS) -> list[Fault]:
    """Faults at random times in the first 80% of the run (every kind at least once, then
    more drawn at random, about one a minute); each daemon kill names its daemon."""
    rng = random.Random(seed)
    count = max(len(kinds), int(seconds / 60))
    chosen = list(kinds) + [rng.choice(kinds) for _ in range(count - len(kinds))]
    rng.shuffle(chosen)
    targets = {"daemon_kill": sorted(DAEMONS), "daemon_stop": WATCHDOGGED}
    faults = []
    for kind in chosen:
        at = round(rng.uniform(0.1, 0.8) * seconds, 1)
        target = rng.choice(targets[kind]) if kind in targets else ""
        faults.append(Fault(kind, at, target))
    return sorted(faults, key=lambda fault: fault.at)


def line_text(run: str, user: str, number: int, kind: str) -> list[str]:
    """The lines one log event prints; its id (``RUN-user-N``) is in the first."""
    tag = f"{run}-{user}-{number}"
    if kind == "json":
        return [json.dumps({"message": f"soak {tag}", "level": "info", "n": number})]
    if kind == "backwards":  # a clock that runs backwards: an hour earlier each time
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600 * number))
        return [json.dumps({"message": f"soak {tag}", "@timestamp": stamp})]
    if kind == "traceback":
        return [f"soak {tag} failed", "Traceback (most recent call last):",
                '  File "<soak>", line 1, in <module>', "ValueError: soak"]  # fmt: skip
    if kind == "long":
        return [f"soak {tag} " + "x" * 20_000]
    return [f"soak {tag} an ordinary line"]


def balance(written: set[str], found: list[str]) -> dict[str, int]:
    """Lost and duplicated ids: every written id once in Elasticsearch."""
    counts: dict[str, int] = {}
    for tag in found:
        counts[tag] = counts.get(tag, 0) + 1
    return {
        "written": len(written),
        "lost": len(written - set(counts)),
        "duplicated": sum(1 for tag in written if counts.get(tag, 0) > 1),
    }


def in_window(at: float, start: float, end: float) -> bool:
    return start <= at <= end


# -- the run -----------------------------------------------------------------------------


@dataclass
class User:
    """A user: start a server, print and browse for a while, go idle, come back, stop."""

    soak: Soak
    name: str
    rng: random.Random
    written: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    lines: int = 0

    def run(self) -> None:
        while not self.soak.halt.is_set():
            try:
                self.session()
            except Exception as error:  # a fault may fail a step; the user tries again
                self.errors.append(f"{type(error).__name__}: {error}"[:200])
                self.soak.halt.wait(5)

    def session(self) -> None:
        client = self.soak.client
        server = "lab" if self.rng.random() < 0.3 else ""
        options = {"image": ALT_IMAGE} if self.rng.random() < 0.3 else None
        with contextlib.suppress(HubAPIError):  # already running, or starting
            client.start_server(self.name, server, options)
        halt = self.soak.halt
        wait_for(lambda: halt.is_set() or self.ready(server), 120, f"{self.name}'s server")
        until = time.monotonic() + self.rng.uniform(20, 60)
        while time.monotonic() < until and not self.soak.halt.is_set():
            self.browse(server)
            self.print_lines(server)
            self.soak.halt.wait(self.rng.uniform(1, 3))
        if self.rng.random() < 0.5:  # stops, or goes idle and lets the culler stop it
            client.stop_server(self.name, server)
        self.soak.halt.wait(IDLE_TIMEOUT + self.rng.uniform(10, 40))

    def ready(self, server: str) -> bool:
        servers = self.soak.client.user(self.name).get("servers", {})
        return bool(servers.get(server, {}).get("ready"))

    def browse(self, server: str) -> None:
        """A request to the server through NGINX: what the hub counts as activity."""
        path = f"/user/{self.name}/{server}/api/status".replace("//", "/")
        requests.get(self.soak.stack.public_url + path, headers=self.soak.headers, timeout=5)

    def print_lines(self, server: str) -> None:
        """Lines printed to the server's own output, from a process in its container."""
        container = self.soak.container(self.name, server)
        if container is None:
            return
        events = []
        for _ in range(self.rng.randint(1, 4)):
            self.lines += 1
            kind = self.rng.choice(LINE_KINDS)
            events.append(line_text(self.soak.run_id, self.name, self.lines, kind))
        text = "".join(line + "\n" for event in events for line in event)
        script = "import sys; open('/proc/1/fd/1', 'w').write(sys.argv[1])"
        result = container.exec_run(["python3", "-c", script, text])
        if result.exit_code == 0:
            first = self.lines - len(events) + 1
            self.written |= {
                f"{self.soak.run_id}-{self.name}-{n}" for n in range(first, first + len(events))
            }


@dataclass
class Soak:
    stack: Stack
    elasticsearch: Elasticsearch
    receiver: Receiver
    seed: int
    run_id: str
    halt: threading.Event = field(default_factory=threading.Event)
    users: tuple[str, ...] = ()
    es_down: float = 60.0
    spool_fs: SmallFS | None = None  # the shipper's state folder, for spool_full
    engine: OwnEngine | None = None  # the soak's own Docker engine, for docker_restart

    def __post_init__(self) -> None:
        self.client: HubClient = self.stack.client()
        self.headers = {"Authorization": f"token {self.client.config.token.reveal()}"}
        self.docker = self.stack.docker  # the machine's engine, or the soak's own

    def container(self, user: str, server: str) -> Any:
        labels = self.stack.config.labels
        found = self.docker.containers.list(
            filters={"label": [f"{labels.user}={user}", f"{labels.server}={server}",
                               f"{labels.hub}={self.stack.config.jupyterhub.name}"]}
        )  # fmt: skip
        return found[0] if found else None

    def spool_writable(self) -> float | None:
        """``hubkeeper_shipper_spool_writable`` from the shipper's endpoint."""
        figures = daemon_metrics(self.stack.config.shipper.endpoint, "hubkeeper_shipper_")
        return figures.get("hubkeeper_shipper_spool_writable")

    def watcher_state(self) -> dict[str, Any]:
        return json.loads(Path(self.stack.config.watcher.state_file).read_text())

    def active_hub(self) -> str:
        return self.watcher_state()["active"]

    # -- faults --------------------------------------------------------------------------

    def cause(self, fault: Fault) -> dict[str, Any]:
        """Cause ``fault``; return its record (when, what) with when it healed."""
        record: dict[str, Any] = {"kind": fault.kind, "target": fault.target, "at": time.time()}
        if fault.kind in HUB_FAULTS:
            active = self.active_hub()
            record["target"] = active
            self.hit_hub(fault.kind, active)
            # a frozen watcher (daemon_stop) fails over only once its watchdog restarted it
            wait_for(lambda: self.active_hub() != active, 200, "the failover")
        elif fault.kind in ("daemon_kill", "daemon_stop"):
            process = self.daemon(fault.target)
            old = process.pid
            signal_process(old, signal.SIGKILL if fault.kind == "daemon_kill" else signal.SIGSTOP)
            wait_for(lambda: process.running() and process.pid != old, 180, "the restart")
        elif fault.kind == "elasticsearch_stop":
            self.elasticsearch.stop()
            time.sleep(self.es_down)
            self.elasticsearch.start()
        elif fault.kind == "elasticsearch_flood":  # healed when the block is lifted
            with flood_stage(self.elasticsearch.url):
                time.sleep(self.es_down)
        elif fault.kind == "spool_full" and self.spool_fs is not None:
            self.spool_fs.fill()  # healed when the shipper writes its spool again
            wait_for(lambda: self.spool_writable() == 0, 60, "the shipper to find it full")
            time.sleep(self.es_down)
            self.spool_fs.free()
            wait_for(lambda: self.spool_writable() == 1, 60, "the shipper to write again")
        elif fault.kind == "docker_restart" and self.engine is not None:
            record["down_s"] = self.engine.restart(down_for=ENGINE_DOWN)
        elif fault.kind == "oom":
            self.wait_for_engine()
            user_label = self.stack.config.labels.user
            running = [
                c
                for c in self.docker.containers.list(filters={"label": self.hub_label})
                if c.labels.get(user_label, "") in self.users
            ]
            if running:
                hog = "b = bytearray(2 * 1024**3)"  # past the 512M limit: this process dies
                running[0].exec_run(["python3", "-c", hog], detach=False)
                record["target"] = running[0].labels[self.stack.config.labels.user]
        elif fault.kind == "orphan":  # healed when the culler has removed it
            self.wait_for_engine()
            orphan = user_process(self.stack, "soak-orphan", ["sleep", "600"])
            record["target"] = orphan.short_id

            def gone() -> bool:
                try:
                    return not self.docker.containers.list(filters={"id": orphan.id})
                except (docker.errors.DockerException, requests.ConnectionError):
                    return False  # the engine restarting (docker_restart)

            wait_for(gone, ORPHAN_GRACE + 120, "the culler to remove the orphan")
        elif fault.kind == "nginx_broken":  # healed when the watcher replaced the file
            break_nginx_config(self.stack.nginx)
            wait_for(lambda: nginx_config_healed(self.stack.nginx), 120, "the NGINX config")
        record["healed_s"] = round(time.time() - record["at"], 2)
        return record

    def wait_for_engine(self) -> None:
        """Until the Docker engine answers (a docker_restart may have it down)."""
        url = self.stack.config.docker.url
        wait_for(lambda: docker_client(url) is not None, 120, "the Docker engine")

    def hit_hub(self, kind: str, active: str) -> None:
        """SIGKILL (its process group) or SIGSTOP the active hub or its proxy; for
        ``failover_watcher_kill``, SIGKILL the watcher too once the failover has begun."""
        part = hubctl.proxy_pid if kind.startswith("proxy") else hubctl.launched_pid
        pid = part(self.stack.config, active)
        if pid is None:
            return
        killing = not kind.endswith("stop")
        signal_process(pid, signal.SIGKILL if killing else signal.SIGSTOP, group=killing)
        if kind == "failover_watcher_kill":
            begun = lambda: self.watcher_state().get("step") is not None  # noqa: E731
            wait_for(begun, 60, "the failover's first phase", interval=0.01)
            signal_process(self.daemon("watch-hubs").pid, signal.SIGKILL)

    def daemon(self, command: str) -> Any:
        return next(p for p in self.stack.processes if p.name == daemon_name(command))

    @property
    def hub_label(self) -> str:
        return f"{self.stack.config.labels.hub}={self.stack.config.jupyterhub.name}"


def daemon_name(command: str) -> str:
    return "watcher" if command == "watch-hubs" else command


def signal_process(pid: int, signum: int, group: bool = False) -> None:
    with contextlib.suppress(ProcessLookupError):
        (os.killpg if group else os.kill)(pid, signum)


# -- the books ----------------------------------------------------------------------------


def shipped_ids(es: Elasticsearch, run_id: str) -> list[str]:
    """The id of every soak event in Elasticsearch, once per document."""
    pattern = re.compile(rf"soak ({re.escape(run_id)}-[\w-]+?-\d+)\b")
    docs = search(es, "hubkeeper-logs-*", {"match": {"message": run_id}})
    return [m.group(1) for doc in docs if (m := pattern.search(str(doc.get("message", ""))))]


BROWSE = re.compile(
    r'\[(\d+/\w+/\d+:\d+:\d+:\d+ [+-]\d+)\] "GET /user/([^/ ]+)/(?:([^/ ]+)/)?api/status[^"]*" 200 '
)


def browses(access_log: str) -> dict[tuple[str, str], list[float]]:
    """When each server was reached through NGINX (answered 200), from NGINX's access log."""
    found: dict[tuple[str, str], list[float]] = {}
    for match in BROWSE.finditer(access_log):
        at = datetime.strptime(match.group(1), "%d/%b/%Y:%H:%M:%S %z").timestamp()
        found.setdefault((match.group(2), match.group(3) or ""), []).append(at)
    return found


def active_culls(
    reached: dict[tuple[str, str], list[float]],
    culls: list[tuple[str, str, float]],
    timeout: float,
    lag: float,
) -> tuple[list[str], list[str]]:
    """Culls of servers in use, and culls of servers whose user came back just before.

    A server culled at ``t`` was in use if it was reached in ``(t - timeout, t - lag]``:
    the hub knew of that use (it learns of a request up to ``lag`` s late) and it was
    within the idle timeout. A use only in ``(t - lag, t]``, after a longer idle spell, is
    the race every idle culler has: the hub cannot know of it yet."""
    active, returned = [], []
    for user, server, at in culls:
        uses = reached.get((user, server), [])
        known = [u for u in uses if at - timeout < u <= at - lag]
        if known:
            active.append(f"{user}/{server} {at - max(known):.0f}s after use")
        elif late := [u for u in uses if at - lag < u <= at]:
            returned.append(f"{user}/{server} back {at - min(late):.0f}s before")
    return active, returned


def culls_of_users(stack: Stack) -> tuple[list[str], list[str]]:
    """:func:`active_culls` of the run, by NGINX's access log and the culler's audit."""
    culls = []
    for line in (stack.logs / "cull.log").read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError, KeyError):
            event = json.loads(line)
            if event["event"] == "cull_decision" and event["result"] in ("done", "stopping"):
                at = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
                culls.append((event["user"], event.get("server") or "", at))
    logs = sorted(Path(stack.config.nginx.prefix, "logs").glob("access.log*"))
    reached = browses("".join(log.read_text(errors="replace") for log in logs))
    return active_culls(reached, culls, IDLE_TIMEOUT, ACTIVITY_INTERVAL)


def alert_books(records: list[dict[str, Any]], receiver: Receiver) -> list[dict[str, Any]]:
    """For each fault: the alert due, when it reached on-call, when it resolved."""
    notes = receiver.notifications()
    books = []
    for record in records:
        due = expected_alert(record["kind"], record["target"])
        after = [n for n in notes if n.alertname == due and n.at >= record["at"]]
        firing = [n for n in after if n.status == "firing"]
        resolved = [n.at for n in after if firing and n.status == "resolved"
                    and n.labels == firing[0].labels and n.at >= firing[0].at]  # fmt: skip
        before = [n for n in notes if n.alertname == due and n.at < record["at"]]
        # still firing from an earlier fault: on-call has it, no new notification comes
        already = not firing and bool(before) and before[-1].status == "firing"
        books.append({
            **record,
            "alert": due,
            "reached_s": round(firing[0].at - record["at"], 1) if firing else None,
            "resolved_s": round(resolved[0] - record["at"], 1) if resolved else None,
            **({"already_firing": True} if already else {}),
        })  # fmt: skip
    return books


def with_failed_requests(load: Load, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each fault's record with the hub API requests that failed from it until 5 s after it
    healed (overlapping faults share theirs)."""
    failed = [s.at for s in load.samples if not s.ok]
    return [
        {**r, "failed_requests": sum(in_window(at, r["at"], r["at"] + (r["healed_s"] or 0) + 5)
                                     for at in failed)}
        for r in records
    ]  # fmt: skip


def orphans_left(soak: Soak) -> int:
    """Containers with the hub's labels that no running server owns."""
    owned = set()
    for model in soak.client.users():
        for server, state in model.get("servers", {}).items():
            if state.get("ready") or state.get("pending"):
                owned.add((model["name"], server))
    labels = soak.stack.config.labels
    return sum(
        1
        for c in soak.docker.containers.list(filters={"label": soak.hub_label})
        if (c.labels.get(labels.user), c.labels.get(labels.server, "")) not in owned
    )


# -- the command ------------------------------------------------------------------------


def run(
    workdir: Path,
    elasticsearch: Elasticsearch,
    seconds: float,
    users: int,
    seed: int,
    kinds: tuple[str, ...] = FAULT_KINDS,
    grace: float = 60.0,
    es_down: float = 60.0,
) -> dict:
    """The soak; ``grace`` seconds after the load for the service to heal, ship and cull."""
    run_id = f"s{seed}x{os.getpid()}"
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    faults = plan(seed, seconds, kinds)
    overrides = log_store_overrides(workdir, elasticsearch.url)
    overrides["alerts"] = webhooks_section(receiver)
    overrides["culler"] = {"timeout": IDLE_TIMEOUT, "cull_every": 10.0, "orphans": "remove",
                           "orphan_grace": ORPHAN_GRACE}  # fmt: skip
    overrides["jupyterhub"] = {"last_activity_interval": ACTIVITY_INTERVAL}
    watcher = {"hold_time": 20.0, "max_failovers_per_hour": 60, "startup_grace": 2.0}
    daemons = tuple(command for command in DAEMONS if command != "watch-hubs")
    try:
        with contextlib.ExitStack() as scope:
            spool_fs = None
            if "spool_full" in kinds:  # mounted before the shipper starts
                state = Path(str(overrides["shipper"]["state_dir"]))
                spool_fs = scope.enter_context(small_tmpfs(state, SPOOL_FS))
                overrides["shipper"]["spool_max_bytes"] = SPOOL_MAX
            engine = None
            if "docker_restart" in kinds:  # an engine of its own: the machine's is not ours
                machine = docker.DockerClient(base_url=DockerConfig().url, timeout=300)
                images = (BASE_IMAGE, *ensure_images(machine, print))
                engine = scope.enter_context(OwnEngine(workdir / "engine", images))
                overrides["docker"] = {"url": engine.url}
            # a hub name of its own: another soak's culler would take this one's servers as
            # orphans
            stack = scope.enter_context(running_stack(
                workdir, hub_name=run_id, watcher=watcher, prometheus=True, daemons=daemons,
                overrides=overrides,
            ))  # fmt: skip
            names = [f"soak{i}" for i in range(users)]
            soak = Soak(stack, elasticsearch, receiver, seed, run_id, users=tuple(names),
                        es_down=es_down, spool_fs=spool_fs, engine=engine)  # fmt: skip
            try:
                soak.client.create_users(names)
            except HubAPIError as error:  # a retried POST whose first try got through
                if error.status != 409:
                    raise
            census, load = HubCensus(stack.config_path), Load(stack, users=(), rate=10.0)
            census.start()
            load.start()
            people = [
                User(soak, name, random.Random(seed * 1000 + i)) for i, name in enumerate(names)
            ]
            started = time.time()
            sessions = [threading.Thread(target=person.run, daemon=True) for person in people]
            for session in sessions:
                session.start()
                soak.halt.wait(0.5)
            records: list[dict[str, Any]] = []
            threads = [threading.Thread(target=lambda f=fault: records.append(
                cause_at(soak, f, started)), daemon=True) for fault in faults]  # fmt: skip
            for thread in threads:
                thread.start()
            soak.halt.wait(max(0.0, started + seconds - time.time()))
            soak.halt.set()
            for thread in [*threads, *sessions]:
                thread.join(180)
            time.sleep(grace)  # the service heals, the shipper catches up, the culler acts
            load.stop()
            census.stop()
            written = set().union(*(person.written for person in people))
            culled = culls_of_users(stack)
            supervised = json.loads((stack.workdir / "supervised.json").read_text())
            return {
                "benchmark": "soak",
                "seed": seed,
                "seconds": seconds,
                "users": users,
                "lines": balance(written, shipped_ids(elasticsearch, run_id)),
                "requests": len(load.samples),
                "requests_failed": sum(1 for s in load.samples if not s.ok),
                "two_hubs_on_database": int(census.most > 1),
                "orphans_left": orphans_left(soak),
                "active_users_culled": culled[0],
                "culled_as_users_came_back": culled[1],
                "faults": alert_books(
                    with_failed_requests(load, sorted(records, key=lambda r: r["at"])), receiver
                ),
                "restarts": {
                    name: d.get("restarts", 0) for name, d in supervised.get("daemons", {}).items()
                },
                "user_errors": sum(len(person.errors) for person in people),
            }
    finally:
        receiver.shutdown()
        receiver.server_close()


def cause_at(soak: Soak, fault: Fault, started: float) -> dict[str, Any]:
    soak.halt.wait(max(0.0, started + fault.at - time.time()))
    at = time.time()
    try:
        return soak.cause(fault)
    except Exception as error:  # the books show a fault that could not be caused or healed
        return {"kind": fault.kind, "target": fault.target, "at": at,
                "healed_s": None, "error": f"{type(error).__name__}: {error}"[:300]}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="length of the load (<= 60)")
    parser.add_argument("--users", type=int, default=24, help="simulated users (1-40)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--faults", default=",".join(FAULT_KINDS), help="kinds, comma-separated")
    parser.add_argument("--workdir", help="keep the stack's files (logs) here")
    args = parser.parse_args()
    kinds = tuple(kind for kind in args.faults.split(",") if kind in FAULT_KINDS)
    seconds = max(60.0, min(args.minutes, 60.0) * 60)
    with contextlib.ExitStack() as scope:
        workdir = args.workdir or scope.enter_context(
            tempfile.TemporaryDirectory(prefix="hubkeeper-soak-")
        )
        scope.enter_context(docker_engine())  # the machine's, for the images
        elasticsearch = scope.enter_context(running_elasticsearch(print))
        users = max(1, min(args.users, 40))
        figures = run(Path(workdir), elasticsearch, seconds, users, args.seed, kinds)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
