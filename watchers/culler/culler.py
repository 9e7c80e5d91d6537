"""One cull cycle: observe (hub users, containers, CPU), decide, act concurrently, report.

Only the holder of ``<state_file>.lock`` acts; another culler on the machine waits as a
hot spare and keeps sampling CPU. The hub is read in full before anything is done, so a
hub that fails part-way causes no action at all. Users are processed concurrently, up
to ``concurrency`` at a time; a user's servers are stopped one after the other, and the
user is deleted (when culling users) only if every one of them stopped.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import docker.errors
import requests
import requests.adapters
from prometheus_client import CollectorRegistry

from hubkeeper.config import Config, Secret
from hubkeeper.files import try_lock, write_atomically
from hubkeeper.hub.settings import SERVICE_SCOPES, culler_scopes
from hubkeeper.hubapi import HubAPIError, HubClient, HubNoAnswer
from hubkeeper.log import get_logger
from hubkeeper.watchers.containers.model import ContainerInfo
from hubkeeper.watchers.containers.reconcile import reconcile, server_path, servers_from_users
from hubkeeper.watchers.culler.activity import CpuActivity, ProxyActivity, server_key
from hubkeeper.watchers.culler.decide import UserPlan, plan, still_idle
from hubkeeper.watchers.culler.model import Decision, Hold, UserView, iso, parse_time, user_view
from hubkeeper.watchers.culler.report import CycleReport, Metrics, Outcome, Result, audit, name_of
from hubkeeper.watchers.culler.storage import read_hold

log = get_logger(__name__)

ServerKey = tuple[str, str]
STOP_ANSWER_SECONDS = 12.0


class CountingSession(requests.Session):
    """A session that counts every request (each retry too) and pools enough connections."""

    def __init__(self, connections: int) -> None:
        super().__init__()
        adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=connections)
        self.mount("http://", adapter)
        self.mount("https://", adapter)
        self.count = 0
        self._count_lock = threading.Lock()

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        with self._count_lock:
            self.count += 1
        return super().request(method, url, *args, **kwargs)


@dataclass
class Observation:
    """What one cycle saw, read in full before any action."""

    now: float
    users: list[Mapping[str, Any]]
    orphans: list[Any] = field(default_factory=list)
    container_ids: dict[str, str] = field(default_factory=dict)  # container name -> id
    known: Mapping[str, frozenset[str]] = field(default_factory=dict)
    cpu: dict[ServerKey, float] = field(default_factory=dict)
    images: dict[ServerKey, str] = field(default_factory=dict)
    node_down: Hold | None = None  # servers whose Swarm node is down

    @property
    def servers_seen(self) -> int:
        return sum(len(user.get("servers") or {}) for user in self.users)


def hub_token(config: Config, environ: Mapping[str, str] = os.environ) -> Secret | None:
    """``[culler] hub_token_file``, else the token the hub gives a managed service, else
    ``[hub] token_file``."""
    if config.culler.hub_token is not None:
        return config.culler.hub_token
    if environ.get("JUPYTERHUB_API_TOKEN"):
        return Secret(environ["JUPYTERHUB_API_TOKEN"])
    return config.hub.token


class Culler:
    def __init__(self, config: Config, dry_run: bool = False) -> None:
        section = config.culler
        if dry_run:
            section = dataclasses.replace(section, dry_run=True)
        self.config = config
        self.section = section
        self.session = CountingSession(section.concurrency + 4)
        hub = dataclasses.replace(config.hub, token=hub_token(config))
        self.client = HubClient(hub, self.session)
        # The hub answers a stop within its slow_stop_timeout (10 s; 202: still stopping),
        # unless its spawner is backed up (DockerSpawner makes every Docker call on one
        # thread, even the poll before a stop): then the stop is left with the hub,
        # unconfirmed, rather than sent again into the same queue.
        timeout = max(hub.timeout, STOP_ANSWER_SECONDS)
        self.actions = HubClient(dataclasses.replace(hub, timeout=timeout), self.session)
        self.proxies = ProxyActivity(config, hub.timeout)
        self.state_path = Path(section.state_file)
        self.lock_path = self.state_path.with_name(self.state_path.name + ".lock")
        saved = self._load_state()
        self.pending_since: dict[ServerKey, float] = {
            (user, server): since for user, server, since in saved.get("pending_stop_since", [])
        }
        self.activity: CpuActivity | None = None
        swarm = config.jupyterhub.spawner == "swarm"  # the node_down hold needs the inventory
        if section.busy_cpu_percent > 0 or section.orphans != "off" or swarm:
            self.activity = CpuActivity(config, saved.get("cpu"))
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=section.concurrency, thread_name_prefix="hubkeeper-cull"
        )
        self.stopping = threading.Event()
        self.last: CycleReport | None = None
        self._lock: IO[str] | None = None
        self._standby_logged = False
        self._last_attempt = time.monotonic()
        self._last_ok: float | None = None  # monotonic
        self._container_ids: dict[str, str] = {}

    # -- lock and state ---------------------------------------------------------------------

    def acquire(self) -> bool:
        """Hold the acting lock (kept until :meth:`close`); False while another culler has it."""
        if self._lock is None:
            self._lock = try_lock(self.lock_path)
            if self._lock is not None:
                log.info("culler_acting", lock=str(self.lock_path), dry_run=self.section.dry_run)
                self._standby_logged = False
            elif not self._standby_logged:
                log.info("culler_standby", lock=str(self.lock_path))
                self._standby_logged = True
        self.metrics.acting.set(1 if self._lock is not None else 0)
        return self._lock is not None

    def _load_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("culler_state_unreadable", path=str(self.state_path), error=str(exc))
            return {}
        return data if isinstance(data, dict) else {}

    def _save_state(self) -> None:
        state = {
            "pending_stop_since": [[u, s, since] for (u, s), since in self.pending_since.items()],
            "cpu": self.activity.history() if self.activity else {},
        }
        write_atomically(self.state_path, json.dumps(state).encode("utf-8"))

    def check_scopes(self) -> list[str]:
        """Warn about scopes the token lacks for what ``[culler]`` enables; return them."""
        needed = {*SERVICE_SCOPES["hubkeeper-culler"], *culler_scopes(self.section)}
        try:
            granted = set(self.client.whoami().get("scopes") or ())
        except HubAPIError as exc:
            log.warning("culler_scope_check_failed", error=str(exc)[:300])
            return []
        missing = sorted(needed - granted)
        if missing:
            log.warning("culler_missing_scopes", missing=missing)
        return missing

    # -- jobs ---------------------------------------------------------------------------------

    def sample(self) -> None:
        """The CPU sampling job (every ``sample_every``), also while on standby."""
        if self.activity is not None:
            self.activity.sample()

    def cycle(self) -> CycleReport | None:
        """One cycle; None when another culler holds the lock."""
        self._last_attempt = time.monotonic()
        if not self.acquire():
            self.metrics.cycles.labels("standby").inc()
            return None
        started, clock, requests_before = time.time(), time.perf_counter(), self.session.count
        try:
            seen = self.observe()
        except HubAPIError as exc:  # names method, path and status, never the token
            report = CycleReport(
                started, time.perf_counter() - clock, False, self.section.dry_run, str(exc)[:300]
            )
            log.warning("cull_cycle_failed", error=report.error)
        else:
            holds = [hold for hold in (seen.node_down, self.storage_hold()) if hold is not None]
            plans, orphans = plan(self.views(seen), seen.orphans, self.section, seen.now, holds)
            self._container_ids = seen.container_ids
            outcomes = self.execute(plans, orphans)
            report = CycleReport(
                time=started,
                duration=time.perf_counter() - clock,
                ok=True,
                dry_run=self.section.dry_run,
                users_seen=len(seen.users),
                servers_seen=seen.servers_seen,
                api_requests=self.session.count - requests_before,
                outcomes=tuple(outcomes),
            )
            self._last_ok = time.monotonic()
            self._save_state()
        self.metrics.record(report, self.session.count - requests_before)
        self.last = report
        log.info(
            "cull_cycle",
            ok=report.ok,
            duration=round(report.duration, 3),
            users_seen=report.users_seen,
            servers_seen=report.servers_seen,
            culled=[name_of(o.decision) for o in report.culled()],
            api_requests=report.api_requests,
            dry_run=report.dry_run,
        )
        return report

    # -- observe ------------------------------------------------------------------------------

    def observe(self) -> Observation:
        """Containers before, every user with a server (and without, when culling users),
        containers after; then orphans and CPU shares."""
        section = self.section
        before: tuple[ContainerInfo, ...] = ()
        if self.activity is not None:
            before = self.activity.sample()
        asked = time.time()
        users: dict[str, Mapping[str, Any]] = {}
        for model in self.client.paginate("/users", {"state": "active"}):
            users[model["name"]] = model
        active = list(users.values())
        if section.cull_users:
            for model in self.client.paginate("/users", {"state": "inactive"}):
                users.setdefault(model["name"], model)
        seen = Observation(now=time.time(), users=list(users.values()))
        self._track_pending(active, seen.now)
        if self.activity is None:
            return seen
        after = self.activity.sample()
        if section.busy_cpu_percent > 0:
            self.activity.settle(self.stopping)  # idle times stay those of the hub's answer
        servers = servers_from_users(active)
        orphans, _missing, seen.known = reconcile(
            servers,
            before,
            after,
            self.config.jupyterhub.name,
            asked - section.orphan_grace,
            check_missing=False,
        )
        if section.orphans != "off" and self.activity.docker_up:
            seen.orphans = list(orphans)
            seen.container_ids = {info.name: info.id for info in after}
        seen.cpu = self.activity.shares(seen.known)
        seen.images = {server_key(info, seen.known): info.image for info in after}
        lost = [info for info in after if info.lost]
        if lost:
            seen.node_down = Hold(
                "node_down",
                frozenset(server_key(info, seen.known) for info in lost),
                nodes=tuple(sorted({info.node for info in lost})),
            )
            log.warning(
                "culler_node_down_hold",
                nodes=list(seen.node_down.nodes),
                servers=sorted(server_path(*key) for key in seen.node_down.servers),
            )
        return seen

    def storage_hold(self) -> Hold | None:
        return read_hold(self.config) if self.section.storage_watchers else None

    def _track_pending(self, users: Iterable[Mapping[str, Any]], now: float) -> None:
        """Remember since when each server has been pending a stop (the hub does not say)."""
        pending = {}
        for user in users:
            for name, server in (user.get("servers") or {}).items():
                if server.get("pending") == "stop":
                    key = (user["name"], name)
                    pending[key] = self.pending_since.get(key, now)
        self.pending_since = pending

    def views(self, seen: Observation) -> list[UserView]:
        default_image = self.config.jupyterhub.image

        def image_of(user: str, server: str, model: Mapping[str, Any]) -> str:
            options = model.get("user_options") or {}
            return seen.images.get((user, server)) or options.get("image") or default_image

        def cpu_of(user: str, server: str) -> float | None:
            return seen.cpu.get((user, server))

        return [user_view(model, image_of, cpu_of, self.pending_since) for model in seen.users]

    # -- act ----------------------------------------------------------------------------------

    def execute(self, plans: list[UserPlan], orphans: list[Decision]) -> list[Outcome]:
        futures = [self.pool.submit(self._act_user, p) for p in plans]
        futures += [self.pool.submit(self._act_each, [d]) for d in orphans]
        return [outcome for future in futures for outcome in future.result()]

    def _act_each(self, decisions: Iterable[Decision]) -> list[Outcome]:
        return [self._act(decision) for decision in decisions]

    def _act_user(self, user_plan: UserPlan) -> list[Outcome]:
        outcomes = self._act_each(user_plan.servers)
        decision = user_plan.user
        if decision is not None:
            stopped = all(o.result in ("done", "gone", "dry_run") for o in outcomes)
            if decision.culls and not stopped:
                decision = dataclasses.replace(decision, action="keep", reason="servers_stopping")
            outcomes.append(self._act(decision))
        return outcomes

    def _act(self, decision: Decision) -> Outcome:
        try:
            result = self._perform(decision)
            outcome = Outcome(decision, result)
        except HubAPIError as exc:
            outcome = Outcome(decision, "gone" if exc.status == 404 else "error", str(exc)[:300])
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            outcome = Outcome(decision, "error", f"{type(exc).__name__}: {exc}"[:300])
        audit(outcome, self.section.dry_run)
        return outcome

    def _perform(self, decision: Decision) -> Result:
        d = decision
        if d.action == "keep":
            if d.report_activity and not self.section.dry_run and d.server is not None:
                self.actions.report_activity(d.user, iso(time.time()), [d.server])
                return "activity_reported"
            return "kept"
        if d.action == "report":
            return "reported"
        if self.section.dry_run:
            return "dry_run"
        if d.action in ("stop", "stop_remove"):
            if not self._still_idle(d):
                return "skipped"
            remove = d.action == "stop_remove"
            try:
                stopped = self.actions.stop_server(d.user, d.server or "", remove, resend=False)
            except HubNoAnswer:
                return "unconfirmed"
            return "done" if stopped else "stopping"
        if d.action == "delete":
            self.actions.delete_user(d.user)
            return "done"
        return self._remove_orphan(d)

    def _still_idle(self, decision: Decision) -> bool:
        """A last look at the server's activity before an idle stop: the hub's, and (for an
        idle stop) its proxies' own (:class:`ProxyActivity`)."""
        servers = self.client.user(decision.user).get("servers") or {}
        model = servers.get(decision.server or "") or {}
        seen = [parse_time(model.get("last_activity"))]
        if decision.reason == "idle":
            seen += self.proxies.last_seen(decision.user, decision.server or "")
        latest = max((t for t in seen if t is not None), default=None)
        return still_idle(decision, latest, time.time())

    def _remove_orphan(self, decision: Decision) -> Result:
        """Remove an orphan by container id, unless the hub has learnt of its server since."""
        assert self.activity is not None and decision.container is not None
        try:
            servers = self.client.user(decision.user).get("servers") or {}
        except HubAPIError as exc:
            if exc.status != 404:
                raise
            servers = {}
        if decision.server in servers:
            return "skipped"
        container_id = self._container_ids.get(decision.container)
        if container_id is None or not self.activity.remove(container_id):
            return "gone"
        return "done"

    # -- endpoint -----------------------------------------------------------------------------

    @property
    def acting(self) -> bool:
        return self._lock is not None

    def last_cycle_age(self) -> float | None:
        return None if self._last_ok is None else time.monotonic() - self._last_ok

    def health(self) -> tuple[bool, str]:
        """Healthy while cycles keep being attempted (a failing hub shows in the metrics)."""
        age = time.monotonic() - self._last_attempt
        if age > 2 * self.section.interval + 60:
            return False, f"no cull cycle for {age:.0f}s\n"
        role = "acting" if self.acting else "standby"
        return True, f"ok; {role}\n"

    def close(self) -> None:
        self.stopping.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self._lock is not None:
            self._save_state()
            self._lock.close()
            self._lock = None
        if self.activity is not None:
            self.activity.close()
