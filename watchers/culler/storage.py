"""Servers the culler leaves alone because their node's notebook storage is hung.

Stopping a server whose files are on a hung mount hangs too (the container's processes
cannot exit, and DockerSpawner's one Docker thread waits behind the stop). So before each
cycle the culler asks every storage watcher in ``[culler] storage_watchers`` for its
``/status`` (with ``[storage].endpoint``'s credentials): while a node reports a hung mount,
every server on that node is reported instead of stopped (reason ``storage_hung``), and
culled again as usual once the mount answers. A node whose watcher does not answer holds
nothing back (it is logged); a hung node whose Docker engine could not name its servers
holds back every stop of the cycle.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

from hubkeeper.config import Config
from hubkeeper.log import get_logger
from hubkeeper.status import fetch
from hubkeeper.watchers.culler.model import Hold

log = get_logger(__name__)


def hold_from(documents: Iterable[Mapping[str, Any]]) -> Hold:
    """The hold from the storage watchers' ``/status`` documents (pure)."""
    servers: set[tuple[str, str]] = set()
    everything, nodes = False, []
    for document in documents:
        if not document.get("hung"):
            continue
        nodes.append(str(document.get("node")))
        listed = document.get("servers")
        if listed is None:
            everything = True
            continue
        servers.update((item["user"], item.get("server") or "") for item in listed)
    return Hold("storage_hung", frozenset(servers), everything, tuple(nodes))


def read_hold(config: Config) -> Hold:
    """Ask every storage watcher (a few seconds at most each)."""
    documents = []
    for address in config.culler.storage_watchers:
        host, _, port = address.rpartition(":")
        endpoint = dataclasses.replace(config.storage.endpoint, listen=host, port=int(port))
        body = fetch(endpoint, "/status")
        try:
            documents.append(json.loads(body or ""))
        except ValueError:
            log.warning("culler_storage_watcher_unanswered", watcher=address)
    hold = hold_from(documents)
    if hold.nodes:
        log.warning(
            "culler_storage_hold",
            nodes=list(hold.nodes),
            servers=sorted(f"{u}/{s}" if s else u for u, s in hold.servers),
            everything=hold.everything,
        )
    return hold
