"""Containers against the hub's view: orphans (no server in the hub) and missing servers.

The hub's own gauges were seen at -1 here, so the exporter compares for itself. The
inventory is taken before and after the hub is asked, so a container that starts or
stops during the request is not misreported: a container counts as an orphan only if it
ran before and after, and longer than the grace period; a ready server counts as missing
only if its container was in neither inventory. On a Swarm the inventory is the whole
cluster's (``reconcile = "cluster"``, :mod:`.swarm`): a server whose task is on a node that
is down is missing, and named with that node.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import docker.errors
import requests

from hubkeeper.hubapi import HubAPIError, HubClient
from hubkeeper.log import get_logger
from hubkeeper.watchers.containers.model import ContainerInfo, real_name
from hubkeeper.watchers.containers.swarm import SwarmInventory, SwarmNode

log = get_logger(__name__)

ReconcileMode = Literal["full", "orphans", "cluster", "off"]


class Inventory(Protocol):
    """Running user-server containers: one engine's (discovery) or a swarm's services."""

    def containers(self) -> tuple[ContainerInfo, ...]: ...


@dataclass(frozen=True)
class HubServer:
    user: str
    server: str  # "" for the default server
    ready: bool
    pending: str | None = None


@dataclass(frozen=True)
class Orphan:
    user: str
    server: str
    container: str  # container name

    def describe(self) -> str:
        return f"{server_path(self.user, self.server)} ({self.container})"


@dataclass(frozen=True)
class MissingServer:
    """A server the hub reports ready without a container; ``node``: the Swarm node that
    is down under it ("" when nothing runs it anywhere)."""

    user: str
    server: str
    node: str = ""

    def describe(self) -> str:
        where = f" (node {self.node} down)" if self.node else ""
        return server_path(self.user, self.server) + where


@dataclass(frozen=True)
class Reconciliation:
    """The last comparison; ``hub_up`` False means the counts below are unknown."""

    time: float
    hub_up: bool
    error: str = ""
    hub_servers: int = 0
    orphans: tuple[Orphan, ...] = ()
    missing: tuple[MissingServer, ...] = ()
    known: Mapping[str, frozenset[str]] = field(default_factory=dict)
    nodes: tuple[SwarmNode, ...] = ()  # on a Swarm: every node, as the manager saw it
    servers_on: Mapping[str, int] = field(default_factory=dict)  # node -> this hub's servers


def server_path(user: str, server: str) -> str:
    return f"{user}/{server}" if server else user


def servers_from_users(users: Iterable[dict[str, Any]]) -> list[HubServer]:
    """Every server in the hub's user models (``servers`` needs the ``read:servers`` scope)."""
    return [
        HubServer(user["name"], name, bool(model.get("ready")), model.get("pending"))
        for user in users
        for name, model in (user.get("servers") or {}).items()
    ]


def reconcile(
    servers: list[HubServer],
    before: Iterable[ContainerInfo],
    after: Iterable[ContainerInfo],
    hub: str,
    started_before: float,
    check_missing: bool = True,
) -> tuple[tuple[Orphan, ...], tuple[MissingServer, ...], dict[str, frozenset[str]]]:
    """Orphans, missing servers, and the hub's names (user -> server names).

    Only containers labelled with this ``hub`` take part. A container is an orphan if it
    ran in both inventories, started before ``started_before``, and the hub has no server
    (in any state) of that user and name. A ``lost`` container (its node is down) is no
    orphan and keeps no server present; it names the node of the server it leaves missing.
    """
    known: dict[str, frozenset[str]] = {}
    for server in servers:
        known[server.user] = known.get(server.user, frozenset()) | {server.server}

    def key(info: ContainerInfo) -> tuple[str, str]:
        user = real_name(info.user, known)
        return user, real_name(info.server, known.get(user, frozenset()))

    ours_before = {info.id: info for info in before if info.hub == hub and not info.lost}
    ours_after = {info.id: info for info in after if info.hub == hub and not info.lost}
    lost_on = {key(info): info.node for info in (*before, *after) if info.hub == hub and info.lost}
    in_hub = {(server.user, server.server) for server in servers}
    orphans = sorted(
        (
            Orphan(*key(info), info.name)
            for cid, info in ours_before.items()
            if cid in ours_after and key(info) not in in_hub and info.started_at < started_before
        ),
        key=lambda orphan: (orphan.user, orphan.server, orphan.container),
    )
    present = {key(info) for info in (*ours_before.values(), *ours_after.values())}
    missing = sorted(
        (
            MissingServer(server.user, server.server, lost_on.get((server.user, server.server), ""))
            for server in servers
            if check_missing and server.ready and (server.user, server.server) not in present
        ),
        key=lambda server: (server.user, server.server),
    )
    return tuple(orphans), tuple(missing), known


class Reconciler:
    """The periodic job: ask the hub, compare, keep the result, log what changed."""

    def __init__(
        self,
        client: HubClient,
        inventory: Inventory,
        hub: str,
        grace: float,
        mode: ReconcileMode,
    ) -> None:
        self._client = client
        self._inventory = inventory
        self._hub = hub
        self._grace = grace
        self._mode = mode
        self.last: Reconciliation | None = None

    def run(self) -> Reconciliation:
        asked = time.time()
        try:
            before = self._inventory.containers()
            asked = time.time()
            users = list(self._client.paginate("/users", {"state": "active"}))
            nodes: dict[str, SwarmNode] = {}
            if isinstance(self._inventory, SwarmInventory):  # the nodes come with the books
                nodes, after = self._inventory.read()
            else:
                after = self._inventory.containers()
        except HubAPIError as exc:  # its text names method, path and status, never the token
            return self._unknown(asked, str(exc))
        except (docker.errors.DockerException, requests.RequestException) as exc:
            return self._unknown(asked, f"swarm manager: {type(exc).__name__}: {exc}")
        servers = servers_from_users(users)
        orphans, missing, known = reconcile(
            servers,
            before,
            after,
            self._hub,
            asked - self._grace,
            check_missing=self._mode != "orphans",
        )
        servers_on = Counter(info.node for info in after if info.hub == self._hub)
        result = Reconciliation(
            time=asked,
            hub_up=True,
            hub_servers=sum(1 for server in servers if server.ready),
            orphans=orphans,
            missing=missing,
            known=known,
            nodes=tuple(sorted(nodes.values(), key=lambda node: node.name)),
            servers_on={node.name: servers_on[node.name] for node in nodes.values()},
        )
        changed = self.last is None or (self.last.orphans, self.last.missing) != (
            orphans,
            missing,
        )
        emit = log.debug
        if changed:
            emit = log.warning if orphans or missing else log.info
        emit(
            "reconciliation",
            hub=self._hub,
            hub_servers=result.hub_servers,
            orphans=[orphan.describe() for orphan in orphans],
            missing=[server.describe() for server in missing],
            nodes_down=[node.name for node in result.nodes if not node.up],
        )
        self.last = result
        return result

    def _unknown(self, asked: float, error: str) -> Reconciliation:
        """The hub (or the swarm manager) did not answer: the counts are unknown."""
        result = Reconciliation(time=asked, hub_up=False, error=error[:300])
        if self.last is None or self.last.hub_up:
            log.warning("hub_unreachable", error=result.error)
        self.last = result
        return result
