"""The snapshot the storage watcher indexes every ``snapshot_interval`` seconds for the
dashboards: one document per mount of this node (state, free space and inodes, probe
time, the user servers on it while it hangs).

The figures live under ``hubkeeper.storage.`` (typed in the shipper's index template),
the node and the mount in ``labels.``, as the container snapshots keep theirs.
"""

from __future__ import annotations

from typing import Any

from hubkeeper.shippers.parsers import iso_from_epoch
from hubkeeper.watchers.storage.logic import MountStatus, Snapshot

DATASET = "hubkeeper.storage"
SERVICE = "hubkeeper-storage"

Document = dict[str, Any]


def percent(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 3) if whole > 0 else None


def mount_figures(mount: MountStatus) -> Document:
    """Free space and inodes (of what unprivileged users get) and the probe's time."""
    figures: Document = {"hubkeeper.storage.hung": mount.state == "hung"}
    if mount.capacity is not None:
        capacity = mount.capacity
        figures["hubkeeper.storage.free.bytes"] = capacity["free_bytes"]
        figures["hubkeeper.storage.free_pct"] = percent(
            capacity["free_bytes"], capacity["size_bytes"]
        )
        figures["hubkeeper.storage.free_inodes_pct"] = percent(
            capacity["free_inodes"], capacity["inodes"]
        )
    if mount.result is not None and mount.state != "hung":
        figures["hubkeeper.storage.probe.seconds"] = round(
            sum(op.seconds for op in mount.result.ops if op.seconds is not None), 6
        )
    return {name: value for name, value in figures.items() if value is not None}


def snapshot_documents(snap: Snapshot, now: float, host: str) -> list[tuple[str, Document]]:
    """``(identity, document)`` pairs, one per mount."""
    on_hung: dict[str, int] = {}
    for _server, mount in snap.affected():
        on_hung[mount] = on_hung.get(mount, 0) + 1
    return [
        (
            f"{DATASET}:{snap.node}:{mount.name}",
            {
                "@timestamp": iso_from_epoch(now),
                "event.kind": "metric",
                "event.dataset": DATASET,
                "service.name": SERVICE,
                "host.name": host,
                "labels.node": snap.node,
                "labels.mount": mount.name,
                "hubkeeper.storage.state": mount.state,
                "hubkeeper.storage.servers_on_hung": on_hung.get(mount.name, 0),
                **mount_figures(mount),
            },
        )
        for mount in snap.mounts
    ]
