"""The storage watcher's rules: pure functions of what the probes saw."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from hubkeeper.watchers.storage.probe import ProbeResult

MountState = Literal["unknown", "ok", "slow", "failed", "hung"]
MOUNT_STATES: tuple[MountState, ...] = ("unknown", "ok", "slow", "failed", "hung")
OwncloudState = Literal["unknown", "up", "maintenance", "not_installed", "down"]
OWNCLOUD_STATES: tuple[OwncloudState, ...] = (
    "unknown", "up", "maintenance", "not_installed", "down",
)  # fmt: skip


@dataclass(frozen=True)
class Check:
    """One timed network check (an RPC call, an HTTP request) and why it failed."""

    ok: bool
    seconds: float
    error: str | None = None


def mount_state(result: ProbeResult | None, slow: float) -> MountState:
    """``hung`` whenever an operation has not returned (however long the others took),
    ``failed`` when one returned an error, ``slow`` past ``slow`` seconds in all, else ``ok``."""
    if result is None:
        return "unknown"
    if result.hung:
        return "hung"
    if any(op.outcome == "failed" for op in result.ops):
        return "failed"
    if sum(op.seconds or 0.0 for op in result.ops) > slow:
        return "slow"
    return "ok"


def state_since(previous: str, since: float, state: str, now: float) -> float:
    """When the current state began: kept while the state stays, ``now`` when it changes."""
    return since if state == previous else now


@dataclass(frozen=True)
class ServerOnNode:
    """A user-server container on this node and the host paths it mounts."""

    user: str
    server: str
    container: str
    sources: tuple[str, ...]


def within(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root + "/") or root == "/"


def affected(
    servers: Iterable[ServerOnNode], mounts: Mapping[str, str], hung: Iterable[str]
) -> list[tuple[ServerOnNode, str]]:
    """Servers whose mounted paths lie on a hung mount (``mounts``: name -> path), with
    the first such mount's name."""
    hung = [name for name in sorted(set(hung)) if name in mounts]
    found = []
    for server in servers:
        for name in hung:
            if any(within(source, mounts[name]) for source in server.sources):
                found.append((server, name))
                break
    return found


def merge_usage(
    usage: Mapping[str, int], done: Mapping[str, int], homes: list[str] | None
) -> dict[str, int]:
    """Usage per home after a scan turn: homes finished in the turn replace their figure;
    a new pass's list of homes drops those that are gone."""
    kept = {user: size for user, size in usage.items() if homes is None or user in homes}
    return {**kept, **done}


def top_users(usage: Mapping[str, int], count: int) -> list[tuple[str, int]]:
    """The ``count`` largest homes, largest first (ties by name)."""
    return sorted(usage.items(), key=lambda item: (-item[1], item[0]))[:count]


def owncloud_state(status: Mapping[str, Any] | None) -> OwncloudState:
    """From ``status.php`` (None: no valid answer): ``maintenance`` also while a database
    upgrade is pending, as Owncloud then refuses its users too."""
    if status is None:
        return "down"
    if not status.get("installed"):
        return "not_installed"
    if status.get("maintenance") or status.get("needsDbUpgrade"):
        return "maintenance"
    return "up"


def percent(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


@dataclass(frozen=True)
class MountStatus:
    """What is known of one mount after its latest probe (times are unix seconds)."""

    name: str
    path: str
    state: MountState = "unknown"
    since: float = 0.0  # when the state began
    result: ProbeResult | None = None
    capacity: Mapping[str, int] | None = None  # the latest statvfs that answered
    usage: Mapping[str, int] | None = None  # home -> bytes; None: not scanned (yet)
    scan_stalled: bool = False


@dataclass(frozen=True)
class Snapshot:
    node: str
    mounts: tuple[MountStatus, ...]
    servers: tuple[ServerOnNode, ...] | None  # None: the Docker engine did not answer
    nfs: Mapping[str, Any]  # server name -> NfsCheck, or None before the first check
    owncloud: Any | None  # OwncloudResult

    @property
    def hung(self) -> list[str]:
        return [m.name for m in self.mounts if m.state == "hung"]

    def affected(self) -> list[tuple[ServerOnNode, str]]:
        paths = {m.name: m.path for m in self.mounts}
        return affected(self.servers or (), paths, self.hung)
