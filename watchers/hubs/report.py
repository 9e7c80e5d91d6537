"""What the hub watcher reports, as pure functions of what it knows: the alerts it pushes to
Alertmanager, its ``/status`` document and its PRTG sensor (as ``watchers/culler/report.py``
is for the culler).

One alert, one label set: an alert that both the watcher pushes (at once, with the story
in its annotations) and a rule in ``alerts/rules/hubs.yml`` raises from the watcher's metrics
(should a push be lost) carries the same labels from both, ``alertname``, ``severity``,
``hub`` and ``team``, so Alertmanager holds it as one alert and notifies once. Which hub:
the one the alert is about as the rule sees it (the new active hub for a failover, the
hub NGINX kept serving for a switch that failed, the hub that would not stop for a fence).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hubkeeper import prtg
from hubkeeper.alertmanager import Alert
from hubkeeper.watchers.hubs.logic import HOUR, Decision, NginxConfigCheck
from hubkeeper.watchers.hubs.state import WatcherState

TEAM = "platform"  # the team of every rule in alerts/rules/hubs.yml


@dataclass(frozen=True)
class Leadership:
    """Where watchers on several hosts share a lease: this one's part in it."""

    leading: bool
    holder: str
    generation: int | None  # of the lease this watcher holds
    store_error: str | None  # why the lease's database did not answer the last renewal


@dataclass(frozen=True)
class Facts:
    """What the watcher knows at the end of a cycle."""

    state: WatcherState
    order: tuple[str, ...]
    health: Mapping[str, str]  # hub: up, down or unknown
    standbys: Sequence[str]
    decision: Decision | None
    last_probe: Mapping[str, Any]
    max_failovers_per_hour: int
    canary_user: str
    canary_error: str | None  # why the last spawn canary failed; None: it passed or never ran
    now: float
    leadership: Leadership | None = None  # None: one watcher, on one machine
    nginx_configs: Mapping[str, NginxConfigCheck] = field(default_factory=dict)  # by host


def recent(times: Sequence[float], now: float) -> list[float]:
    """The times within the last hour (the one window of failover counts and alerts)."""
    return [t for t in times if now - t < HOUR]


def hub_alert(name: str, severity: str, summary: str, description: str, hub: str) -> Alert:
    return Alert(name, severity, summary, description, {"hub": hub, "team": TEAM})


def stray_fenced(hub: str, active: str) -> Alert:
    return hub_alert(
        "HubkeeperStrayHubFenced",
        "warning",
        f"Hub {hub} ran beside the active hub and was fenced",
        f"Hub {hub} answered while {active} is active; two hubs must not share the database. "
        "There is no automatic fail-back.",
        hub,
    )


def failover_failed(
    alert: str, source: str, target: str, message: str, active: str
) -> Alert | None:
    """The alert of a failover that stopped; None for a fence that failed, which
    :func:`alerts` raises for as long as the hub stays unfenced."""
    story = f"Failover {source} -> {target} stopped: {message}. NGINX still serves {active}."
    if alert == "HubkeeperStandbyStartFailed":
        return hub_alert(alert, "critical", f"Standby hub {target} did not start", story, target)
    if alert == "HubkeeperNginxReloadFailed":
        summary = f"NGINX could not be switched to hub {target}"
        return hub_alert(alert, "critical", summary, story, active)
    return None


def nginx_config_repaired(active: str, generation: int, error: str, kept: str) -> Alert:
    """The event of a live NGINX config that ``nginx -t`` refused, replaced by the watcher."""
    return hub_alert(
        "HubkeeperNginxConfigRepaired",
        "warning",
        "NGINX's live config was broken by hand and replaced",
        f"NGINX's live config failed nginx -t ({error}). NGINX kept serving the config it had "
        f"loaded, so users saw nothing; the watcher replaced the file with the generated config "
        f"of hub {active} (generation {generation}) and kept the refused one as {kept}. The "
        "file is generated: change the template instead.",
        active,
    )


def lease_alerts(facts: Facts) -> list[Alert]:
    """Every watcher pages when it cannot reach the lease's database: none may act then."""
    leadership = facts.leadership
    if leadership is None or leadership.store_error is None:
        return []
    return [
        hub_alert(
            "HubkeeperWatcherLeaseStoreUnreachable",
            "critical",
            "The hub watchers cannot reach their lease database",
            f"Watcher {leadership.holder} cannot renew the lease ({leadership.store_error}); "
            "no watcher fails over until the database answers. The hubs share that "
            "PostgreSQL server: check it first.",
            facts.state.active,
        )
    ]


def alerts(facts: Facts) -> list[Alert]:
    """The conditions that fire now (events such as a stray hub are kept by the watcher);
    a standby watcher reports only its own trouble with the lease."""
    if facts.leadership is not None and not facts.leadership.leading:
        return lease_alerts(facts)
    state, active = facts.state, facts.state.active
    found = lease_alerts(facts) + [
        hub_alert(
            "HubkeeperFenceFailed",
            "critical",
            f"Hub {hub} could not be fenced",
            f"Hub {hub} still answers after its stop command; no standby is promoted while it "
            "may still use the database.",
            hub,
        )
        for hub in state.unfenced
    ]
    if state.frozen:
        found.append(hub_alert(
            "HubkeeperFailoverFrozen",
            "critical",
            "Automatic hub failover is frozen",
            f"{facts.max_failovers_per_hour} failovers within an hour; the watcher no longer "
            f"fails over. Active hub: {active}. Switch with `hubkeeper failover --to NAME` "
            "once the cause is fixed.",
            active,
        ))  # fmt: skip
    if not facts.standbys:
        found.append(hub_alert(
            "HubkeeperNoHealthyStandby",
            "critical",
            "No standby hub is available",
            f"Active hub {active} has no standby left to fail over to.",
            active,
        ))  # fmt: skip
    stuck = {host: check for host, check in facts.nginx_configs.items() if check.error}
    if stuck:
        refused = "; ".join(
            f"{host}: {check.error} (replacing it failed: {check.repair_error})"
            for host, check in sorted(stuck.items())
        )
        found.append(hub_alert(
            "HubkeeperNginxConfigInvalid",
            "critical",
            "NGINX's live config fails nginx -t and could not be replaced",
            f"NGINX's live config fails nginx -t and the watcher could not replace it with "
            f"the generated one: {refused}. NGINX still serves hub {active} from the config "
            "it loaded, but would not start again (a reboot, an upgrade), and the same cause "
            "may stop a failover.",
            active,
        ))  # fmt: skip
    decision = facts.decision
    if facts.health[active] == "down" and decision is not None and decision.kind in (
        "wait", "freeze"
    ):  # fmt: skip
        found.append(hub_alert(
            "HubkeeperAllHubsDown",
            "critical",
            "The active hub is down and no failover runs",
            f"Hub {active} fails its probes ({decision.reason}); NGINX stays on it.",
            active,
        ))  # fmt: skip
    last = state.last_failover
    if last and facts.now - last["at"] < HOUR:
        found.append(hub_alert(
            "HubkeeperFailover",
            "warning",
            f"Hub failover to {last['to']}",
            f"Hub {last['from']} failed ({last['reason']}); {last['to']} took over in "
            f"{last['duration_seconds']} s.",
            last["to"],
        ))  # fmt: skip
    if facts.canary_error is not None:
        found.append(hub_alert(
            "HubkeeperSpawnCanaryFailed",
            "critical",
            f"Spawning a server fails on hub {active}",
            f"The spawn canary ({facts.canary_user}) failed: {facts.canary_error}. Users cannot "
            "start servers; the standby shares the spawner, so there is no failover.",
            active,
        ))  # fmt: skip
    return found


def status(facts: Facts, firing: Sequence[str]) -> dict[str, Any]:
    """The watcher's ``/status`` document."""
    state = facts.state
    return {
        "active": state.active,
        "generation": state.generation,
        "frozen": state.frozen,
        "last_failover": state.last_failover,
        "step": None if state.step is None else vars(state.step),
        "hubs": {
            name: {
                "state": facts.health[name],
                "last_probe": facts.last_probe.get(name),
                "failed_until": state.failed_until.get(name),
            }
            for name in facts.order
        },
        "alerts": list(firing),
        "leadership": None if facts.leadership is None else vars(facts.leadership),
        "nginx_config": {host: vars(check) for host, check in facts.nginx_configs.items()},
    }


def sensor(facts: Facts) -> prtg.Payload:
    """The hubs as one PRTG sensor: what an operator's dashboard needs at a glance."""
    state = facts.state
    channels = [
        prtg.channel(
            "Active hub up",
            int(facts.health[state.active] == "up"),
            limits=prtg.Limits(min_error=0.5, error_msg="active hub is down"),
        ),
        prtg.channel(
            "Standbys available",
            len(facts.standbys),
            limits=prtg.Limits(min_error=0.5, error_msg="no standby hub left"),
        ),
        prtg.channel(
            "Failover frozen",
            int(state.frozen),
            limits=prtg.Limits(max_error=0.5, error_msg="automatic failover frozen"),
        ),
        prtg.channel(
            "Failovers last hour",
            len(recent(state.failover_times, facts.now)),
            limits=prtg.Limits(max_warning=0.5),
        ),
        prtg.channel("Generation", state.generation),
    ]
    for name in facts.order:
        probe_result = facts.last_probe.get(name) or {}
        channels.append(prtg.channel(f"Hub {name} up", int(facts.health[name] == "up")))
        channels.append(
            prtg.channel(
                f"Hub {name} probe time",
                float(probe_result.get("seconds", 0.0)) * 1000,
                "TimeResponse",
            )
        )
    last = state.last_failover
    text = f"active hub {state.active} (generation {state.generation})"
    if last:
        text += f"; last failover {last['from']} to {last['to']} ({last['reason']})"
    return prtg.sensor(channels, text)
