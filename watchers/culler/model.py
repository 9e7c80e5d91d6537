"""Plain data the culler decides on, and its reading of the hub's user models."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Kind = Literal["server", "user", "orphan"]
#: stop: stop a server; stop_remove: stop and delete a named server; delete: delete a user;
#: remove_container: stop and remove an orphan container; keep: nothing; report: log only
Action = Literal["stop", "stop_remove", "delete", "remove_container", "keep", "report"]
CULLING: frozenset[str] = frozenset({"stop", "stop_remove", "delete", "remove_container"})


@dataclass(frozen=True)
class ServerView:
    """One server of a user, as the hub reports it, with what the culler measured."""

    user: str
    name: str  # "" for the default server
    ready: bool
    pending: str | None  # "spawn", "stop", ... while the hub is busy with it
    started: float | None  # unix seconds
    last_activity: float | None
    image: str
    cpu_percent: float | None = None  # percent of one CPU over the busy window; None: unknown
    pending_since: float | None = None  # when a pending stop was first seen


@dataclass(frozen=True)
class UserView:
    name: str
    admin: bool
    groups: tuple[str, ...]
    created: float | None
    last_activity: float | None
    servers: tuple[ServerView, ...]


@dataclass(frozen=True)
class Decision:
    """What to do with one server, user or orphan container, and why."""

    kind: Kind
    user: str
    server: str | None  # None for a user
    action: Action
    reason: str
    idle_seconds: float | None = None
    age_seconds: float | None = None
    cpu_percent: float | None = None
    timeout: float | None = None
    max_age: float | None = None
    report_activity: bool = False  # a busy server whose activity the hub should learn
    container: str | None = None

    @property
    def culls(self) -> bool:
        return self.action in CULLING


def parse_time(value: str | None) -> float | None:
    """JupyterHub's ISO 8601 timestamps (``...Z``) as unix seconds; None when unset."""
    if not value:
        return None
    stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if stamp.tzinfo is None:  # naive timestamps are UTC, as the idle culler reads them
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def route_activity(routes: Mapping[str, Any], user: str, server: str) -> float | None:
    """The latest activity a proxy's routing table (configurable-http-proxy's ``GET
    /api/routes``, JupyterHub's route data flattened into each route) records for a user's
    server; None when no route to it has one. A stamp that cannot be read is left out."""
    latest = None
    for route in routes.values():
        if not isinstance(route, Mapping) or route.get("user") != user:
            continue
        if (route.get("server_name") or "") != server:
            continue
        try:
            seen = parse_time(route.get("last_activity"))
        except (TypeError, ValueError, AttributeError):
            continue
        if seen is not None and (latest is None or seen > latest):
            latest = seen
    return latest


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def user_view(
    model: Mapping[str, Any],
    image_of: Callable[[str, str, Mapping[str, Any]], str],
    cpu_of: Callable[[str, str], float | None],
    pending_since: Mapping[tuple[str, str], float],
) -> UserView:
    """A :class:`UserView` from a hub user model (fields the token cannot read are absent)."""
    name = model["name"]
    servers = tuple(
        ServerView(
            user=name,
            name=server_name,
            ready=bool(server.get("ready")),
            pending=server.get("pending"),
            started=parse_time(server.get("started")),
            last_activity=parse_time(server.get("last_activity")),
            image=image_of(name, server_name, server),
            cpu_percent=cpu_of(name, server_name),
            pending_since=pending_since.get((name, server_name)),
        )
        for server_name, server in sorted((model.get("servers") or {}).items())
    )
    return UserView(
        name=name,
        admin=bool(model.get("admin")),
        groups=tuple(model.get("groups") or ()),
        created=parse_time(model.get("created")),
        last_activity=parse_time(model.get("last_activity")),
        servers=servers,
    )


@dataclass(frozen=True)
class Hold:
    """Servers whose stop or removal would do harm now: reported instead, with ``reason``
    (``storage_hung``: their notebook storage hangs; ``node_down``: their Swarm node is
    down, so the stop cannot reach them and would discard them when it comes back)."""

    reason: str
    servers: frozenset[tuple[str, str]] = frozenset()  # (user, server name)
    everything: bool = False
    nodes: tuple[str, ...] = ()  # the nodes concerned

    def holds(self, user: str, server: str | None) -> bool:
        return self.everything or (user, server or "") in self.servers
