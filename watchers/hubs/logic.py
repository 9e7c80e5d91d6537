"""Pure decisions of the hub watcher: rise/fall health, and what to do about it.

Nothing here does I/O; the daemon feeds observations in and carries decisions out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

HealthState = Literal["unknown", "up", "down"]
ActionKind = Literal["none", "wait", "failover", "switch", "fence_stray", "freeze"]
HOUR = 3600.0


@dataclass(frozen=True)
class HubHealth:
    """Consecutive probe outcomes of one hub and the state they add up to."""

    state: HealthState = "unknown"
    successes: int = 0
    failures: int = 0
    # When the failures in a row began, if every one of them was only late (None: one was not)
    late_since: float | None = None


def observe(
    health: HubHealth,
    ok: bool,
    rise: int,
    fall: int,
    late: bool = False,
    now: float = 0.0,
    hang_time: float = 0.0,
) -> HubHealth:
    """Fold one probe result in: ``rise`` successes make a hub up, ``fall`` failures down.

    A hub whose failures were all ``late`` (it accepted the connection, its answer did not
    come in time) is down only once they have lasted ``hang_time`` too: busy (a burst of
    spawns blocks JupyterHub's event loop for seconds) is not hung, and failing a busy hub
    over loads the standby, which adopts every server, with the same burst."""
    if ok:
        successes = health.successes + 1
        state = "up" if successes >= rise else health.state
        return HubHealth(state, successes, 0)
    failures = health.failures + 1
    # one failure that was not late makes the whole run count at once
    late_since = (now if health.failures == 0 else health.late_since) if late else None
    hung = late_since is None or now - late_since >= hang_time
    state = "down" if failures >= fall and hung else health.state
    return HubHealth(state, 0, failures, late_since)


@dataclass(frozen=True)
class Limits:
    startup_grace: float
    hold_time: float
    max_failovers_per_hour: int


@dataclass(frozen=True)
class View:
    """Everything a decision depends on, at one instant."""

    now: float
    started_at: float
    hubs: tuple[str, ...]  # priority order
    active: str
    health: dict[str, HubHealth]
    failover_times: tuple[float, ...] = ()
    frozen: bool = False
    failed_until: dict[str, float] = field(default_factory=dict)
    requested: str | None = None  # a planned switch asked for by an operator
    store_reachable: bool = True  # the lease's database answered just now (several hosts)


@dataclass(frozen=True)
class Decision:
    kind: ActionKind
    reason: str
    target: str | None = None


def standbys(view: View) -> list[str]:
    """Hubs that may be started in place of the active one, in priority order."""
    return [
        hub
        for hub in view.hubs
        if hub != view.active and view.failed_until.get(hub, 0.0) <= view.now
    ]


def decide(view: View, limits: Limits) -> Decision:
    if view.requested is not None:
        if view.requested == view.active:
            return Decision("none", "requested hub is already active")
        return Decision("switch", "planned", view.requested)
    if view.now < view.started_at + limits.startup_grace:
        return Decision("wait", "startup_grace")
    strays = [h for h in view.hubs if h != view.active and view.health[h].state == "up"]
    if strays:
        # Two hubs must never run against one database: the one NGINX does not serve goes.
        return Decision("fence_stray", "stray_hub_answering", strays[0])
    if view.health[view.active].state != "down":
        return Decision("none", f"active_{view.health[view.active].state}")
    if not view.store_reachable:
        # the hubs' database is down too, most likely: not a hub failure, and the lease
        # that would let this watcher act is running out
        return Decision("wait", "lease_store_unreachable")
    if view.frozen:
        return Decision("wait", "frozen")
    recent = [t for t in view.failover_times if view.now - t < HOUR]
    if len(recent) >= limits.max_failovers_per_hour:
        return Decision("freeze", "failover_cap_reached")
    if recent and view.now - max(recent) < limits.hold_time:
        return Decision("wait", "hold_time")
    candidates = standbys(view)
    if not candidates:
        return Decision("wait", "no_standby")
    return Decision("failover", "active_down", candidates[0])


def after_failover(health: dict[str, HubHealth], old: str, new: str) -> dict[str, HubHealth]:
    """Health once ``new`` passed its probes and ``old`` was fenced: ``new``'s failures
    while it waited as a standby are forgotten (counted on, its first late probe as the
    active hub would make it down at once, whatever ``hang_time``)."""
    return {**health, old: HubHealth("down"), new: HubHealth("up")}


# -- NGINX's live config file ---------------------------------------------------------------


@dataclass(frozen=True)
class NginxConfigCheck:
    """NGINX's live config file as last checked. NGINX keeps serving the config it loaded
    when a reload finds the file broken: a file ``nginx -t`` refuses is no outage yet, but
    the next start of NGINX (a reboot, an upgrade) would fail."""

    error: str | None = None  # why ``nginx -t`` refuses it; None: it passes
    generated: bool = True  # it is what the template renders for the live hub and generation
    repair_error: str | None = None  # why replacing a refused file failed


def nginx_check_due(now: float, last: float | None, interval: float) -> bool:
    """``nginx -t`` is a process: at most once per ``interval`` (and at once on start)."""
    return last is None or now - last >= interval


def nginx_config_needs_repair(check: NginxConfigCheck) -> bool:
    """Only a file NGINX refuses is replaced. A hand edit NGINX accepts is the operator's
    (reported, and gone at the next switch, which renders the whole file)."""
    return check.error is not None


def nginx_config_news(before: NginxConfigCheck | None, now: NginxConfigCheck) -> str | None:
    """The event to log once when the live file stays refused (its repair failed), or
    turns accepted but other than the template renders (a hand edit, or a template changed
    since the last switch); a repair that worked is an event of its own."""
    if now.error is not None:
        return "nginx_config_invalid" if before is None or before.error is None else None
    if not now.generated:
        return None if before is not None and not before.generated else "nginx_config_differs"
    return None
