"""The hub watcher: observe (probes) -> decide (logic.py) -> act (fence, start, switch) -> report.

Failover order never lets two hubs run against the database, and keeps users on their
servers: fence the old hub process and confirm it is gone (its proxy, if alive, keeps
routing users to their servers), start the standby (a warm one opens the database only
now) and wait until it passes the probes and its proxy holds every route the old proxy
held, then switch NGINX and confirm through NGINX; only then retire the old proxy and warm
the old instance up as the new standby. Each phase is recorded first, so a watcher killed
in between finishes the failover when it comes back.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from hubkeeper import prtg
from hubkeeper.alertmanager import Alert, AlertPusher
from hubkeeper.config import Config, HubInstance
from hubkeeper.log import get_logger
from hubkeeper.nginx import NginxError
from hubkeeper.watchers.hubs import report
from hubkeeper.watchers.hubs.canary import SpawnCanary
from hubkeeper.watchers.hubs.hands import Hands
from hubkeeper.watchers.hubs.lease import LeaseKeeper, LeaseStoreError
from hubkeeper.watchers.hubs.logic import (
    HOUR,
    Decision,
    HubHealth,
    Limits,
    NginxConfigCheck,
    View,
    after_failover,
    decide,
    nginx_check_due,
    nginx_config_needs_repair,
    nginx_config_news,
    observe,
    standbys,
)
from hubkeeper.watchers.hubs.probe import (
    ProbeResult,
    ProxyError,
    port_answers,
    probe,
    proxy_routes,
    user_routes,
)
from hubkeeper.watchers.hubs.state import StateStore, Step, Store, WatcherState

log = get_logger(__name__)


class ActionFailed(Exception):
    def __init__(self, alert: str, message: str) -> None:
        super().__init__(message)
        self.alert = alert


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.hub_up = Gauge(
            "hubkeeper_watcher_hub_up",
            "1 when the hub passes its probes",
            ["hub"],
            registry=registry,
        )
        self.probe_duration = Histogram(
            "hubkeeper_watcher_probe_duration_seconds",
            "Duration of each probe check",
            ["hub", "check"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.active = Gauge(
            "hubkeeper_watcher_active_hub",
            "1 for the hub NGINX serves",
            ["hub"],
            registry=registry,
        )
        self.generation = Gauge(
            "hubkeeper_watcher_generation", "NGINX config generation", registry=registry
        )
        self.failovers = Counter(
            "hubkeeper_watcher_failovers_total",
            "Completed failovers",
            ["reason"],
            registry=registry,
        )
        self.failover_duration = Histogram(
            "hubkeeper_watcher_failover_duration_seconds",
            "From decision to confirmed switch",
            registry=registry,
            buckets=(1, 2, 5, 10, 20, 30, 60, 120),
        )
        self.reloads = Counter(
            "hubkeeper_watcher_nginx_reloads_total",
            "NGINX switches by result",
            ["result"],
            registry=registry,
        )
        self.switch_failures = Counter(
            "hubkeeper_watcher_nginx_switch_failures_total",
            "Switches of NGINX that failed (refused before anything stopped, or rolled back), "
            "by the hub NGINX kept serving",
            ["hub"],
            registry=registry,
        )
        self.fence_failures = Counter(
            "hubkeeper_watcher_fence_failures_total",
            "Hubs that could not be fenced",
            ["hub"],
            registry=registry,
        )
        self.config_valid = Gauge(
            "hubkeeper_watcher_nginx_config_valid",
            "1 while NGINX's live config file passes nginx -t (checked every "
            "nginx_check_interval), by NGINX host (`local`: the watcher's own)",
            ["nginx"],
            registry=registry,
        )
        self.config_repairs = Counter(
            "hubkeeper_watcher_nginx_config_repairs_total",
            "Live NGINX config files that nginx -t refused, replaced by the generated one, by "
            "the hub NGINX served",
            ["hub"],
            registry=registry,
        )
        self.leader = Gauge(
            "hubkeeper_watcher_leader",
            "1 while this watcher may act (holds the lease, or the lock on one machine)",
            registry=registry,
        )
        self.frozen = Gauge(
            "hubkeeper_watcher_failover_frozen",
            "1 while automatic failover is frozen",
            registry=registry,
        )


#: Seconds between checks that every NGINX host serves the live generation (several hosts).
ALIGN_EVERY = 2.0


class StepClock:
    """Seconds spent in each named step of a failover, in order."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self.last = time.monotonic()

    def lap(self, name: str, ended: float | None = None) -> None:
        """The step ``name`` ended now, or at ``ended`` (monotonic)."""
        end = time.monotonic() if ended is None else ended
        self.laps[name] = round(end - self.last, 3)
        self.last = end


class HubWatcher:
    """Acts once :meth:`take_over` ran: at once on one machine (the file lock is held), or
    whenever it gains the lease when ``keeper`` is given (watchers on several hosts)."""

    def __init__(
        self,
        config: Config,
        config_path: Path,
        registry: CollectorRegistry,
        store: Store | None = None,
        keeper: LeaseKeeper | None = None,
    ) -> None:
        self.config = config
        self.section = config.watcher
        self.config_path = config_path.resolve()
        self.hubs = {hub.name: hub for hub in config.jupyterhub.instances}
        self.order = tuple(self.hubs)
        self.limits = Limits(
            self.section.startup_grace,
            self.section.hold_time,
            self.section.max_failovers_per_hour,
        )
        self.keeper = keeper
        self.hands = Hands(config, self.config_path, keeper.token if keeper else lambda: 0)
        self.store = store or StateStore(Path(self.section.state_file))
        self.metrics = Metrics(registry)
        self.alerts = AlertPusher(
            self.section.alertmanager_urls,
            self.section.alert_resend_interval,
            runbook_base=config.alerts.runbook_base_url.rstrip("/"),
        )
        self.health = {name: HubHealth() for name in self.order}
        self.last_probe: dict[str, Any] = {}
        self.started_at = time.time()
        self.pool = ThreadPoolExecutor(max_workers=len(self.order), thread_name_prefix="probe")
        self.events: list[tuple[Alert, float]] = []  # failed actions, alerted for an hour
        self.last_decision: Decision | None = None
        self.last_cycle = time.monotonic()
        self.state = WatcherState(active=self.order[0])
        self.follow_state()  # a lease database that does not answer yet: paged, not fatal
        self.led_generation: int | None = None  # the lease generation take_over ran for
        self.last_align = 0.0
        self.nginx_configs: dict[str, NginxConfigCheck] = {}  # by NGINX host, as last checked
        self.nginx_checked: float | None = None  # monotonic
        # Before the first scrape: a generation that jumped from 0 would read as a failover.
        self.metrics.generation.set(self.state.generation)
        self.canary = (
            SpawnCanary(self.section, config.hub, registry)
            if self.section.canary_interval > 0
            else None
        )

    # -- start-up --------------------------------------------------------------------------

    def take_over(self, generation: int = 0) -> None:
        """Start acting: tell the agents the new fencing token, read the state, correct it
        by what NGINX serves, and finish a failover a previous leader left half done."""
        if self.hands.remote:
            self.hands.announce()
        self.state = self._reconciled_state()
        self.led_generation = generation
        self.resume()

    def _reconciled_state(self) -> WatcherState:
        """The saved state, corrected by what NGINX actually serves."""
        state = self.store.load() or WatcherState(active=self.order[0])
        live = self.hands.live()
        if live is not None and (live[0], live[1]) != (state.active, state.generation):
            log.warning(
                "state_reconciled",
                saved_active=state.active,
                saved_generation=state.generation,
                nginx_active=live[0],
                nginx_generation=live[1],
            )
            state.active, state.generation = live
        if state.active not in self.hubs:
            raise SystemExit(f"watcher: active hub {state.active!r} is not configured")
        self.store.save(state)
        return state

    def resume(self) -> None:
        """Finish a failover that a previous watcher left half done."""
        step = self.state.step
        if step is not None:
            log.warning(
                "failover_resumed", source=step.source, target=step.target, phase=step.phase
            )
            self.failover(step.source, step.target, step.reason, resumed=True)

    # -- the cycle -------------------------------------------------------------------------

    def healthz(self) -> tuple[bool, str]:
        """Healthy while cycles keep coming (a failover may hold one for its whole length)."""
        settings = self.section
        allowed = 10 * settings.interval + (
            2 * settings.fence_timeout
            + 2 * settings.start_timeout
            + settings.route_timeout
            + settings.confirm_timeout
            + settings.proxy_drain
        )
        age = time.monotonic() - self.last_cycle
        if age > allowed:
            return False, f"no watcher cycle for {age:.0f}s"
        return True, f"active hub {self.state.active}"

    def leading(self) -> bool:
        """Whether this watcher may act now; on gaining a new lease it takes over first."""
        if self.keeper is None:
            return True  # the file lock is held
        lease = self.keeper.lease
        if lease is None or not self.keeper.leading():
            return False
        if lease.generation != self.led_generation:
            self.take_over(lease.generation)
        return True

    def cycle(self) -> Decision | None:
        self.last_cycle = time.monotonic()
        self.observe()
        if not self.leading():
            self.follow()
            return None
        if self.keeper is not None and self.health[self.state.active].state == "down":
            self.keeper.renew()  # a failover needs the database to answer now
        requested = self.store.take_request()
        if self.hands.remote and time.monotonic() - self.last_align >= ALIGN_EVERY:
            self.last_align = time.monotonic()
            self.hands.align(self.hubs[self.state.active], self.state.generation)
        decision = decide(self.view(requested), self.limits)
        if decision != self.last_decision:
            log.info("decision", kind=decision.kind, reason=decision.reason, target=decision.target)
            self.last_decision = decision
        self.act(decision)
        self.check_nginx()
        if requested is not None:
            self.state.last_request = {
                "target": requested,
                "ok": self.state.active == requested,
                "at": time.time(),
            }
            self.store.save(self.state)
        self.report(decision)
        return decision

    def _probe(self, hub: HubInstance) -> ProbeResult:
        token, proxy_token = self.section.hub_token, self.config.jupyterhub.proxy_token
        return probe(hub, token, proxy_token, self.section.probe_timeout)

    def observe(self) -> None:
        results = self.pool.map(self._probe, self.hubs.values())
        for result in results:
            before = self.health[result.hub].state
            health = observe(
                self.health[result.hub], result.ok, self.section.rise, self.section.fall,
                result.late, time.monotonic(), self.section.hang_time,
            )  # fmt: skip
            self.health[result.hub] = health
            if health.state != before:
                log.info(
                    "hub_state_changed",
                    hub=result.hub,
                    state=health.state,
                    was=before,
                    failed_check=result.failed_check,
                    error=result.error,
                )
            for check, seconds in result.durations.items():
                self.metrics.probe_duration.labels(result.hub, check).observe(seconds)
            self.last_probe[result.hub] = {
                "ok": result.ok,
                "failed_check": result.failed_check,
                "error": result.error,
                "seconds": round(sum(result.durations.values()), 4),
            }
        for name in list(self.state.unfenced):
            if self.health[name].state == "down" and not self._answers(self.hubs[name]):
                self.state.unfenced.remove(name)

    def follow(self) -> None:
        """A standby watcher: keep the leader's state in view, report, never act."""
        self.led_generation = None
        self.follow_state()
        self.report(None)

    def follow_state(self) -> None:
        """The state as the leader saved it; when the store does not answer, its alert says
        so and the last state read stays shown."""
        with contextlib.suppress(LeaseStoreError):
            self.state = self.store.load() or self.state

    def view(self, requested: str | None = None) -> View:
        return View(
            now=time.time(),
            started_at=self.started_at,
            hubs=self.order,
            active=self.state.active,
            health=dict(self.health),
            failover_times=tuple(self.state.failover_times),
            frozen=self.state.frozen,
            failed_until=dict(self.state.failed_until),
            requested=requested,
            store_reachable=self.keeper is None or self.keeper.error is None,
        )

    def act(self, decision: Decision) -> None:
        if decision.kind in ("failover", "switch") and decision.target is not None:
            if decision.target not in self.hubs:
                log.error("unknown_hub_requested", target=decision.target)
                return
            if decision.kind == "switch":
                self.state.frozen = False  # an operator's switch also lifts a freeze
            self.failover(self.state.active, decision.target, decision.reason)
        elif decision.kind == "fence_stray" and decision.target is not None:
            self.fence(self.hubs[decision.target], quiet=True)
            self.demote(self.hubs[decision.target])
            self.health[decision.target] = HubHealth("down")
            stray = report.stray_fenced(decision.target, self.state.active)
            self.events.append((stray, time.time()))
        elif decision.kind == "freeze":
            self.state.frozen = True
            log.error("failover_frozen", failovers_last_hour=len(self.state.failover_times))
        self.store.save(self.state)

    # -- actions ---------------------------------------------------------------------------

    def failover(self, source: str, target: str, reason: str, resumed: bool = False) -> bool:
        started = time.monotonic()
        state = self.state
        if not resumed:
            state.failover_times = report.recent(state.failover_times, time.time())
            state.failover_times.append(time.time())
            try:  # a config NGINX would refuse fails here, before anything is stopped
                self.hands.check(self.hubs[target], state.generation + 1)
            except NginxError as error:
                return self._failed(source, target, "HubkeeperNginxReloadFailed", str(error))
        step = Step(source, target, reason, "fencing", time.time())
        steps = StepClock()
        try:
            state.step = step
            self.store.save(state)
            # taken before the fence: what the old proxy routes is what users are using now
            handover = self._user_routes(self.hubs[source])
            steps.lap("routes_read")
            self.fence(self.hubs[source])
            steps.lap("fence")
            step.phase = "starting"
            self.store.save(state)
            self.start(self.hubs[target])
            steps.lap("start")
            if handover:
                self.await_routes(self.hubs[target], handover)
            steps.lap("route_check")
            step.phase = "switching"
            self.store.save(state)
            confirming = self.switch(target, state.generation + 1)
            steps.lap("reload", time.monotonic() - confirming)
            steps.lap("confirm")
        except ActionFailed as failure:
            return self._failed(source, target, failure.alert, str(failure))
        state.active, state.generation, state.step = target, state.generation + 1, None
        duration = time.monotonic() - started
        state.last_failover = {
            "from": source,
            "to": target,
            "reason": reason,
            "handover": handover is not None,
            "at": time.time(),
            "duration_seconds": round(duration, 3),
            "steps": steps.laps,
        }
        self.store.save(state)
        self.health = after_failover(self.health, source, target)
        self.metrics.failovers.labels(reason).inc()
        self.metrics.failover_duration.observe(duration)
        log.warning(
            "failover_done",
            source=source,
            target=target,
            reason=reason,
            generation=state.generation,
            duration_seconds=round(duration, 3),
            handover=handover is not None,
            steps=steps.laps,
        )
        time.sleep(self.section.proxy_drain)  # requests NGINX's old workers still forward
        self.demote(self.hubs[source])
        return True

    def _failed(self, source: str, target: str, alert: str, message: str) -> bool:
        """Leave NGINX where it was; fence the target again if it may have been started."""
        log.error("failover_failed", source=source, target=target, alert=alert, error=message)
        if alert == "HubkeeperNginxReloadFailed":
            self.metrics.switch_failures.labels(self.state.active).inc()
        if alert == "HubkeeperStandbyStartFailed":
            self.state.failed_until[target] = time.time() + self.section.standby_retry_after
        if self.state.step is not None and self.state.step.phase in ("starting", "switching"):
            self.fence(self.hubs[target], quiet=True)
        self.state.step = None
        self.store.save(self.state)
        failed = report.failover_failed(alert, source, target, message, self.state.active)
        if failed is not None:
            self.events.append((failed, time.time()))
        return False

    def fence(self, hub: HubInstance, quiet: bool = False) -> None:
        """Stop the hub process and confirm that its port no longer answers (and, with a
        lease in the hubs' database, that it has no session there)."""
        self.hands.hub(hub, "stop", self.section.fence_timeout)
        deadline = time.monotonic() + self.section.fence_timeout
        while self._answers(hub) or self._on_database(hub):
            if time.monotonic() > deadline:
                self.metrics.fence_failures.labels(hub.name).inc()
                if hub.name not in self.state.unfenced:
                    self.state.unfenced.append(hub.name)
                if quiet:
                    return
                message = f"hub {hub.name} still answers or holds a database session"
                raise ActionFailed("HubkeeperFenceFailed", message)
            time.sleep(0.1)
        if hub.name in self.state.unfenced:  # a fence that failed before took now
            self.state.unfenced.remove(hub.name)
        log.info("hub_fenced", hub=hub.name)

    @staticmethod
    def _answers(hub: HubInstance) -> bool:
        return port_answers(hub.host, hub.hub_port)

    def _on_database(self, hub: HubInstance) -> bool:
        """Whether the instance had a session in the lease's database, ending any it had.

        A host that died, or lost its link, leaves its hub's sessions open on the server
        until TCP gives up on them (hours); a hub that still runs opens a new one. Ended now,
        and none found on the next look, the instance is off the database. Unknown (the
        database does not answer) counts as on it."""
        if self.keeper is None:
            return False
        try:
            return self.keeper.store.end_sessions(f"jupyterhub-{hub.name}") > 0
        except LeaseStoreError:
            return True

    def _user_routes(self, hub: HubInstance) -> dict[str, str] | None:
        """The user routes the instance's proxy holds, or None when it does not answer."""
        token = self.config.jupyterhub.proxy_token
        try:
            routes = proxy_routes(hub, token, self.section.probe_timeout)
        except (requests.RequestException, ValueError, ProxyError):
            return None
        return user_routes(routes)

    def await_routes(self, hub: HubInstance, expected: dict[str, str]) -> None:
        """Wait until the new proxy routes every user the old one did (at most
        ``route_timeout``: a server that stopped meanwhile must not hold the switch)."""
        deadline = time.monotonic() + self.section.route_timeout
        while True:
            missing = sorted(set(expected) - set(self._user_routes(hub) or {}))
            if not missing:
                return
            if time.monotonic() > deadline:
                log.warning("routes_missing", hub=hub.name, count=len(missing), some=missing[:20])
                return
            time.sleep(0.02)

    def demote(self, hub: HubInstance) -> None:
        """A fenced instance: its proxy retired, then made a warm standby again."""
        self.hands.hub(hub, "retire", self.section.fence_timeout)
        self.hands.hub(hub, "warm", self.section.start_timeout)

    def start(self, hub: HubInstance) -> None:
        """Start the hub and wait until it passes ``rise`` probes in a row."""
        if not self.hands.hub(hub, "start", self.section.start_timeout):
            raise ActionFailed("HubkeeperStandbyStartFailed", f"start command of {hub.name} failed")
        deadline = time.monotonic() + self.section.start_timeout
        health = HubHealth()
        while health.state != "up":
            if time.monotonic() > deadline:
                raise ActionFailed("HubkeeperStandbyStartFailed", f"hub {hub.name} did not come up")
            result = self._probe(hub)
            health = observe(health, result.ok, self.section.rise, 1)
            if not result.ok:
                time.sleep(0.05)
        log.info("hub_started", hub=hub.name)

    def switch(self, target: str, generation: int) -> float:
        """Switch and confirm NGINX; return the seconds the confirmation took."""
        live = self.hands.live()
        if live == (target, generation):
            self.metrics.reloads.labels("already").inc()
            return 0.0
        try:
            confirming = self.hands.switch(
                self.hubs[target], generation, self.section.confirm_timeout
            )
        except NginxError as error:
            self.metrics.reloads.labels("rolled_back").inc()
            raise ActionFailed("HubkeeperNginxReloadFailed", str(error)) from None
        self.metrics.reloads.labels("ok").inc()
        log.info("nginx_switched", active=target, generation=generation)
        return confirming

    def check_nginx(self) -> None:
        """Every ``nginx_check_interval``: a live config file NGINX refuses (edited by hand)
        is replaced by the generated config of the live hub and generation, which NGINX
        already serves; the refused file is kept beside it. Logged once per episode."""
        now = time.monotonic()
        if not nginx_check_due(now, self.nginx_checked, self.section.nginx_check_interval):
            return
        self.nginx_checked = now
        active, generation = self.hubs[self.state.active], self.state.generation
        for host, found in self.hands.nginx_configs(active, generation).items():
            if nginx_config_needs_repair(found):
                found = self._repair_nginx(host, active, generation, found)
            news = nginx_config_news(self.nginx_configs.get(host), found)
            if news == "nginx_config_invalid":
                log.error(news, host=host, error=found.error, repair_error=found.repair_error)
            elif news is not None:  # accepted by NGINX: a hand edit, or a newer template
                log.warning(news, host=host)
            self.nginx_configs[host] = found
            self.metrics.config_valid.labels(host).set(0 if found.error else 1)

    def _repair_nginx(
        self, host: str, active: HubInstance, generation: int, found: NginxConfigCheck
    ) -> NginxConfigCheck:
        """The check after replacing a refused file: clean, or why the replacement failed."""
        try:
            kept = self.hands.repair_nginx(host, active, generation, self.section.confirm_timeout)
        except NginxError as error:
            return replace(found, repair_error=str(error))
        self.metrics.config_repairs.labels(active.name).inc()
        error = str(found.error)
        self.events.append(
            (report.nginx_config_repaired(active.name, generation, error, kept), time.time())
        )
        log.warning(
            "nginx_config_repaired",
            host=host,
            error=found.error,
            active=active.name,
            generation=generation,
            kept=kept,
        )
        return NginxConfigCheck()

    def run_canary(self) -> None:
        """A spawn canary through NGINX while the active hub is up (never a failover)."""
        if self.canary is not None and self.health[self.state.active].state == "up":
            self.canary.run()

    # -- reports ---------------------------------------------------------------------------

    def report(self, decision: Decision | None) -> None:
        self.metrics.leader.set(1 if self.keeper is None or self.keeper.leading() else 0)
        for name in self.order:
            self.metrics.hub_up.labels(name).set(1 if self.health[name].state == "up" else 0)
            self.metrics.active.labels(name).set(1 if name == self.state.active else 0)
        self.metrics.generation.set(self.state.generation)
        self.metrics.frozen.set(1 if self.state.frozen else 0)
        self.alerts.update(self.current_alerts(decision), time.time())

    def facts(self, decision: Decision | None) -> report.Facts:
        canary = self.canary.last if self.canary is not None else None
        return report.Facts(
            state=self.state,
            order=self.order,
            health={name: health.state for name, health in self.health.items()},
            standbys=standbys(self.view()),
            decision=decision,
            last_probe=self.last_probe,
            max_failovers_per_hour=self.section.max_failovers_per_hour,
            canary_user=self.section.canary_user,
            canary_error=canary.error if canary is not None and not canary.ok else None,
            now=time.time(),
            leadership=self.leadership(),
            nginx_configs=self.nginx_configs,
        )

    def leadership(self) -> report.Leadership | None:
        keeper = self.keeper
        if keeper is None:
            return None
        generation = keeper.lease.generation if keeper.lease is not None else None
        return report.Leadership(keeper.leading(), keeper.holder, generation, keeper.error)

    def current_alerts(self, decision: Decision | None) -> list[Alert]:
        """What fires now, and the events of the last hour (failed actions, strays)."""
        now = time.time()
        self.events = [(alert, at) for alert, at in self.events if now - at < HOUR]
        return report.alerts(self.facts(decision)) + [alert for alert, _ in self.events]

    def status(self) -> dict[str, Any]:
        firing = [alert.name for alert, _ in self.alerts.firing.values()]
        return report.status(self.facts(self.last_decision), firing)

    def prtg(self) -> prtg.Payload:
        return report.sensor(self.facts(self.last_decision))
