"""What the culler reports: one JSON audit line per decision, metrics, a PRTG sensor."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge

from hubkeeper import prtg
from hubkeeper.log import get_logger
from hubkeeper.watchers.containers.reconcile import server_path
from hubkeeper.watchers.culler.model import Decision

log = get_logger("hubkeeper.culler.audit")

#: done: the hub stopped or deleted it; stopping: the hub is still stopping it (202);
#: unconfirmed: the stop was sent, no answer in time; gone: it was already gone (404);
#: dry_run: what would have been done
Result = Literal[
    "done",
    "stopping",
    "unconfirmed",
    "gone",
    "error",
    "dry_run",
    "kept",
    "activity_reported",
    "reported",
    "skipped",
]
CULLED: frozenset[str] = frozenset({"done", "stopping", "unconfirmed"})


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    result: Result
    error: str = ""


@dataclass(frozen=True)
class CycleReport:
    """One cycle; ``ok`` False means the hub could not be read and nothing was done."""

    time: float
    duration: float
    ok: bool
    dry_run: bool
    error: str = ""
    users_seen: int = 0
    servers_seen: int = 0
    api_requests: int = 0
    outcomes: tuple[Outcome, ...] = ()

    def culled(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result in CULLED or o.result == "dry_run"]

    def count(self, *, kind: str | None = None, reason: str | None = None) -> int:
        return sum(
            1
            for o in self.outcomes
            if (kind is None or o.decision.kind == kind)
            and (reason is None or o.decision.reason == reason)
        )


def metric_kind(decision: Decision) -> str:
    if decision.kind == "server":
        return "named_server" if decision.server else "default_server"
    return decision.kind


def name_of(decision: Decision) -> str:
    if decision.server is None:
        return decision.user
    return server_path(decision.user, decision.server)


def audit(outcome: Outcome, dry_run: bool) -> None:
    """The audit line: who, what, why, with the numbers the decision was made on."""
    d = outcome.decision
    emit = log.warning if outcome.result == "error" or d.action == "report" else log.info
    emit(
        "cull_decision",
        kind=d.kind,
        user=d.user,
        server=d.server,
        action=d.action,
        reason=d.reason,
        result=outcome.result,
        idle_seconds=_rounded(d.idle_seconds),
        age_seconds=_rounded(d.age_seconds),
        cpu_percent=_rounded(d.cpu_percent),
        timeout=d.timeout,
        max_age=d.max_age,
        container=d.container,
        dry_run=dry_run,
        **({"error": outcome.error} if outcome.error else {}),
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class Metrics:
    """``hubkeeper_culler_*`` in the culler's own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, text: str, labels: Iterable[str] = ()) -> Counter:
            return Counter(f"hubkeeper_culler_{name}", text, list(labels), registry=registry)

        def gauge(name: str, text: str) -> Gauge:
            return Gauge(f"hubkeeper_culler_{name}", text, registry=registry)

        self.culls = counter(
            "culls", "Servers stopped, users deleted, orphans removed.", ("kind", "reason")
        )
        self.dry_run_culls = counter(
            "dry_run_culls", "What a dry run would have culled.", ("kind", "reason")
        )
        self.skips = counter("skips", "Decisions not to cull, by reason.", ("kind", "reason"))
        self.errors = counter("errors", "Failed actions and failed cycles.", ("action",))
        self.cycles = counter("cycles", "Cull cycles by result (ok, error, standby).", ("result",))
        self.activity_reports = counter(
            "activity_reports", "Busy servers whose activity was reported to the hub."
        )
        self.requests = counter("hub_requests", "Hub API requests made (retries included).")
        self.duration = gauge("cycle_duration_seconds", "Duration of the last cull cycle.")
        self.last_cycle = gauge(
            "last_cycle_timestamp_seconds", "When the last successful cycle started."
        )
        self.servers = gauge("servers_seen", "Servers (ready or pending) in the last cycle.")
        self.users = gauge("users_seen", "Users listed in the last cycle.")
        self.stuck = gauge("stuck_servers", "Servers pending past pending_timeout.")
        self.orphans = gauge("orphan_containers", "Running containers the hub does not know.")
        self.acting = gauge("acting", "1 while this culler holds the lock and acts.")
        self.dry_run = gauge("dry_run", "1 when the culler only logs what it would do.")

    def record(self, report: CycleReport, requests: int) -> None:
        self.requests.inc(requests)
        self.dry_run.set(1 if report.dry_run else 0)
        if not report.ok:
            self.cycles.labels("error").inc()
            self.errors.labels("list_users").inc()
            return
        self.cycles.labels("ok").inc()
        self.duration.set(report.duration)
        self.last_cycle.set(report.time)
        self.servers.set(report.servers_seen)
        self.users.set(report.users_seen)
        self.stuck.set(sum(1 for o in report.outcomes if o.decision.reason.startswith("stuck_")))
        self.orphans.set(report.count(kind="orphan"))
        for outcome in report.outcomes:
            d = outcome.decision
            labels = (metric_kind(d), d.reason)
            if outcome.result in CULLED:
                self.culls.labels(*labels).inc()
            elif outcome.result == "dry_run":
                self.dry_run_culls.labels(*labels).inc()
            elif outcome.result == "error":
                self.errors.labels(d.action).inc()
            elif outcome.result in ("kept", "activity_reported", "reported"):
                self.skips.labels(*labels).inc()
            if outcome.result == "activity_reported":
                self.activity_reports.inc()


def sensor(
    report: CycleReport | None, acting: bool, age: float | None, interval: float
) -> prtg.Payload:
    """``/prtg/culler``: the last cycle's counts; PRTG's error form when it failed."""
    if report is not None and not report.ok:
        return prtg.error(f"last cull cycle failed: {report.error}")
    outcomes = report.outcomes if report else ()
    results = Tally((o.decision.kind, o.result, o.decision.reason) for o in outcomes)

    def count(kind: str, results_in: Iterable[str], reason: str | None = None) -> int:
        wanted = set(results_in)
        return sum(
            n
            for (k, result, why), n in results.items()
            if k == kind and result in wanted and (reason is None or why == reason)
        )

    warn_above_zero = prtg.Limits(max_warning=0)
    kept = ("kept", "activity_reported")
    stuck = [o for o in outcomes if o.decision.reason.startswith("stuck_")]
    orphans = [o for o in outcomes if o.decision.kind == "orphan"]
    channels = [
        prtg.channel("Servers seen", report.servers_seen if report else 0),
        prtg.channel("Culled servers", count("server", CULLED)),
        prtg.channel("Culled users", count("user", CULLED)),
        prtg.channel(
            "Would cull (dry run)", sum(count(k, ["dry_run"]) for k in ("server", "user", "orphan"))
        ),
        prtg.channel("Kept busy", count("server", kept, "busy")),
        prtg.channel(
            "Kept exempt",
            sum(count("server", kept, r) for r in ("exempt_user", "exempt_group", "exempt_image")),
        ),
        prtg.channel("Stuck servers", len(stuck), limits=warn_above_zero),
        prtg.channel("Orphan containers", len(orphans), limits=warn_above_zero),
        prtg.channel("Removed orphans", count("orphan", CULLED)),
        prtg.channel(
            "Errors",
            sum(1 for o in outcomes if o.result == "error"),
            limits=warn_above_zero,
        ),
        prtg.channel("Cycle time", float(report.duration) if report else 0.0, "TimeSeconds"),
        prtg.channel(
            "Last cycle age",
            float(age) if age is not None else 0.0,
            "TimeSeconds",
            limits=prtg.Limits(max_warning=3 * interval),
        ),
        prtg.channel("Acting", 1 if acting else 0),
        prtg.channel("Hub API requests", report.api_requests if report else 0),
    ]
    parts = []
    if not acting:
        parts.append("standby: another culler holds the lock")
    if report is None:
        parts.append("waiting for the first cycle")
    else:
        culled = [name_of(o.decision) for o in report.culled()]
        parts.append(
            ("would cull: " if report.dry_run else "culled: ") + (", ".join(culled) or "none")
        )
        if stuck:
            parts.append("stuck: " + ", ".join(name_of(o.decision) for o in stuck))
        if orphans:
            parts.append("orphans: " + ", ".join(o.decision.container or "" for o in orphans))
    return prtg.sensor(channels, "; ".join(parts))
