"""The culler's decisions: pure functions of the hub's view, measured CPU and ``[culler]``.

Same meaning as jupyterhub-idle-culler where it has the option: a server is idle when
``now - (last_activity or started) >= timeout``; ``max_age`` stops servers (and deletes
users) by age even when active; ``cull_default_servers``/``cull_named_servers`` only
limit idle culling, as there. hubkeeper adds exemptions, per-group/per-image limits, busy
protection (idle culling only), stuck pending servers and orphans. One deliberate
difference: with ``cull_admin_users = false`` an admin is never deleted, not even by age.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hubkeeper.config import CullerConfig
from hubkeeper.watchers.containers.reconcile import Orphan
from hubkeeper.watchers.culler.model import Action, Decision, Hold, ServerView, UserView


@dataclass(frozen=True)
class UserPlan:
    """A user's server decisions, then (when culling users) the user's own."""

    servers: tuple[Decision, ...]
    user: Decision | None


def limits(config: CullerConfig, groups: Iterable[str], image: str | None) -> tuple[float, float]:
    """Idle timeout and max age: the first rule matching a group or the image, else the
    section's own (a rule may set only one of the two)."""
    groups = set(groups)
    for rule in config.rules:
        if (rule.group is not None and rule.group in groups) or (
            rule.image is not None and rule.image == image
        ):
            timeout = rule.timeout if rule.timeout is not None else config.timeout
            max_age = rule.max_age if rule.max_age is not None else config.max_age
            return timeout, max_age
    return config.timeout, config.max_age


def exemption(config: CullerConfig, user: UserView, image: str | None = None) -> str | None:
    """The reason ``user`` (or this server image) is never culled, or None."""
    if user.name in config.exempt_users:
        return "exempt_user"
    if set(user.groups) & set(config.exempt_groups):
        return "exempt_group"
    if image is not None and image in config.exempt_images:
        return "exempt_image"
    return None


def stuck(server: ServerView, config: CullerConfig, now: float) -> str | None:
    """``stuck_spawn``/``stuck_stop`` when the server has been pending past the limit."""
    since = {"spawn": server.started, "stop": server.pending_since}.get(server.pending or "")
    if since is not None and now - since >= config.pending_timeout:
        return f"stuck_{server.pending}"
    return None


def busy(server: ServerView, config: CullerConfig) -> str | None:
    """Why an idle server is kept for its CPU use (``busy``, ``cpu_unknown``), or None."""
    if config.busy_cpu_percent <= 0:
        return None
    if server.cpu_percent is None:
        return "cpu_unknown" if config.busy_unknown == "keep" else None
    return "busy" if server.cpu_percent > config.busy_cpu_percent else None


def decide_server(server: ServerView, user: UserView, config: CullerConfig, now: float) -> Decision:
    since = server.last_activity or server.started
    idle = now - since if since is not None else None
    age = now - server.started if server.started is not None else None
    timeout, max_age = limits(config, user.groups, server.image)

    def decision(action: Action, reason: str, report: bool = False) -> Decision:
        return Decision(
            kind="server",
            user=user.name,
            server=server.name,
            action=action,
            reason=reason,
            idle_seconds=idle,
            age_seconds=age,
            cpu_percent=server.cpu_percent,
            timeout=timeout,
            max_age=max_age or None,
            report_activity=report,
        )

    exempt = exemption(config, user, server.image)
    if server.pending:
        reason = stuck(server, config, now)
        if reason is None:
            return decision("keep", "pending")
        repair = reason == "stuck_spawn" and config.stop_stuck and exempt is None
        return decision("stop" if repair else "report", reason)
    if not server.ready:
        return decision("keep", "not_ready")
    if exempt is not None:
        return decision("keep", exempt)
    enabled = config.cull_named_servers if server.name else config.cull_default_servers
    stop: Action = "stop_remove" if server.name and config.remove_named_servers else "stop"
    if idle is None:
        keep = "no_activity"
    elif idle < timeout:
        keep = "active"
    elif not enabled:
        keep = "named_servers_kept" if server.name else "default_servers_kept"
    else:
        keep = busy(server, config) or ""
        if not keep:
            return decision(stop, "idle")
    if max_age and age is not None and age >= max_age:
        return decision(stop, "max_age")
    return decision("keep", keep, report=keep == "busy" and config.report_activity)


def decide_user(
    user: UserView, servers: Sequence[Decision], config: CullerConfig, now: float
) -> Decision | None:
    """Whether to delete the user once all their servers are stopped (None: not culling users)."""
    if not config.cull_users:
        return None
    since = user.last_activity or user.created
    idle = now - since if since is not None else None
    age = now - user.created if user.created is not None else None
    timeout, max_age = limits(config, user.groups, None)

    def decision(action: Action, reason: str) -> Decision:
        return Decision(
            kind="user",
            user=user.name,
            server=None,
            action=action,
            reason=reason,
            idle_seconds=idle,
            age_seconds=age,
            timeout=timeout,
            max_age=max_age or None,
        )

    exempt = exemption(config, user)
    if exempt is not None:
        return decision("keep", exempt)
    if any(not server.culls for server in servers):
        return decision("keep", "servers_running")
    if user.admin and not config.cull_admin_users:
        return decision("keep", "admin")
    if idle is not None and idle >= timeout:
        return decision("delete", "idle")
    if max_age and age is not None and age >= max_age:
        return decision("delete", "max_age")
    return decision("keep", "active")


def decide_orphan(orphan: Orphan, config: CullerConfig) -> Decision:
    """Orphans past their grace period: removed only when ``orphans = "remove"``."""
    action: Action = "remove_container" if config.orphans == "remove" else "report"
    return Decision(
        kind="orphan",
        user=orphan.user,
        server=orphan.server,
        action=action,
        reason="orphan",
        container=orphan.container,
    )


def still_idle(decision: Decision, last_activity: float | None, now: float) -> bool:
    """At the moment of an idle stop: whether the server is still idle. The cycle looked at
    the hub a few seconds earlier; a user who came back since must keep the server."""
    if decision.reason != "idle" or decision.timeout is None or last_activity is None:
        return True
    return now - last_activity >= decision.timeout


def held(decision: Decision, holds: Sequence[Hold]) -> Decision:
    """A stop or removal of a held server becomes a report, with the first hold's reason
    (a stop on hung storage would hang too; one on a node that is down cannot reach it).
    Nothing else changes."""
    if decision.culls and decision.kind != "user":
        for hold in holds:
            if hold.holds(decision.user, decision.server):
                return dataclasses.replace(decision, action="report", reason=hold.reason)
    return decision


def plan(
    users: Iterable[UserView],
    orphans: Iterable[Orphan],
    config: CullerConfig,
    now: float,
    holds: Sequence[Hold] = (),
) -> tuple[list[UserPlan], list[Decision]]:
    """Every decision of one cycle: per user (servers, then the user), then orphans."""
    plans = []
    for user in users:
        servers = tuple(
            held(decide_server(server, user, config, now), holds) for server in user.servers
        )
        plans.append(UserPlan(servers, decide_user(user, servers, config, now)))
    return plans, [held(decide_orphan(orphan, config), holds) for orphan in orphans]
