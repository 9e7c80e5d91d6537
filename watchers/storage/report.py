"""The storage watcher's reports, pure functions of a :class:`Snapshot`: Prometheus
metrics, the ``/status`` document (which the culler reads) and the PRTG sensor."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hubkeeper import prtg
from hubkeeper.watchers.storage.logic import (
    MOUNT_STATES,
    OWNCLOUD_STATES,
    MountStatus,
    Snapshot,
    percent,
    top_users,
)
from hubkeeper.watchers.storage.nfs import CALLS

PREFIX = "hubkeeper_storage_"
CAPACITY = {
    "size_bytes": "filesystem size, bytes",
    "free_bytes": "bytes free to unprivileged users (statvfs f_bavail)",
    "inodes": "inodes in all",
    "free_inodes": "inodes free to unprivileged users (statvfs f_favail)",
}


def gauge(name: str, help_text: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, help_text, labels=labels)


def families(snap: Snapshot, top: int) -> list[GaugeMetricFamily]:
    node = snap.node
    m = ["node", "mount"]
    state = gauge("mount_state", "1 for the mount's current state", [*m, "state"])
    hung = gauge("mount_hung", "1 while the mount's probe has not returned", m)
    hung_for = gauge("mount_hung_seconds", "how long the mount has been hung, seconds", m)
    op_ok = gauge("operation_ok", "1 when the operation returned without error", [*m, "operation"])
    op_seconds = gauge(
        "operation_seconds",
        "seconds the operation took in the latest probe (hung: waited so far)",
        [*m, "operation"],
    )
    capacity = {key: gauge(key, text, m) for key, text in CAPACITY.items()}
    usage = gauge("user_usage_bytes", f"disk usage of the {top} largest homes, bytes", [*m, "user"])
    homes = gauge("usage_homes", "homes whose usage is known", m)
    stalled = gauge("usage_scan_stalled", "1 while the usage scan does not answer", m)
    for mount in snap.mounts:
        labels = [node, mount.name]
        for name in MOUNT_STATES:
            state.add_metric([*labels, name], 1.0 if mount.state == name else 0.0)
        hung.add_metric(labels, 1.0 if mount.state == "hung" else 0.0)
        waited = mount.result.waited if mount.result is not None else 0.0
        hung_for.add_metric(labels, waited if mount.state == "hung" else 0.0)
        for op in mount.result.ops if mount.result is not None else ():
            op_ok.add_metric([*labels, op.op], 1.0 if op.outcome == "ok" else 0.0)
            if op.seconds is not None:
                op_seconds.add_metric([*labels, op.op], op.seconds)
        for key, family in capacity.items():
            if mount.capacity is not None:
                family.add_metric(labels, float(mount.capacity[key]))
        if mount.usage is not None:
            homes.add_metric(labels, float(len(mount.usage)))
            for user, size in top_users(mount.usage, top):
                usage.add_metric([*labels, user], float(size))
        stalled.add_metric(labels, 1.0 if mount.scan_stalled else 0.0)
    servers = gauge(
        "server_on_hung_storage",
        "1 for each user server whose mounted paths are on a hung mount",
        ["node", "mount", "user", "server", "container"],
    )
    affected = snap.affected()
    for server, mount_name in affected:
        servers.add_metric([node, mount_name, server.user, server.server, server.container], 1.0)
    count = gauge("servers_on_hung_storage", "user servers on a hung mount", ["node"])
    count.add_metric([node], float(len(affected)))
    docker_up = gauge("docker_up", "1 when the Docker engine listed the user servers", ["node"])
    docker_up.add_metric([node], 0.0 if snap.servers is None else 1.0)
    return [state, hung, hung_for, op_ok, op_seconds, *capacity.values(), usage, homes, stalled,
            servers, count, docker_up, *nfs_families(snap), *owncloud_families(snap)]  # fmt: skip


def nfs_families(snap: Snapshot) -> list[GaugeMetricFamily]:
    up = gauge(
        "nfs_up", "1 when NFS NULL and GETATTR of the export root succeeded", ["node", "server"]
    )
    ok = gauge("nfs_call_ok", "1 when the RPC call succeeded", ["node", "server", "call"])
    seconds = gauge("nfs_call_seconds", "seconds the RPC call took", ["node", "server", "call"])
    for name, result in snap.nfs.items():
        if result is None:
            continue
        up.add_metric([snap.node, name], 1.0 if result.up else 0.0)
        for call in CALLS:
            found = result.calls.get(call)
            ok.add_metric([snap.node, name, call], 1.0 if found is not None and found.ok else 0.0)
            if found is not None:
                seconds.add_metric([snap.node, name, call], found.seconds)
    return [up, ok, seconds]


def owncloud_families(snap: Snapshot) -> list[GaugeMetricFamily]:
    result = snap.owncloud
    up = gauge("owncloud_up", "1 when status.php says up and the PROPFIND succeeded", ["node"])
    state = gauge("owncloud_state", "1 for Owncloud's current state", ["node", "state"])
    ok = gauge("owncloud_check_ok", "1 when the check succeeded", ["node", "check"])
    seconds = gauge("owncloud_check_seconds", "seconds the check took", ["node", "check"])
    info = gauge("owncloud_info", "Owncloud's version from status.php", ["node", "version",
                 "versionstring", "edition", "productname"])  # fmt: skip
    if result is not None:
        up.add_metric([snap.node], 1.0 if result.up else 0.0)
        for name in OWNCLOUD_STATES:
            state.add_metric([snap.node, name], 1.0 if result.state == name else 0.0)
        for check, found in result.checks.items():
            ok.add_metric([snap.node, check], 1.0 if found.ok else 0.0)
            seconds.add_metric([snap.node, check], found.seconds)
        if result.info:
            keys = ("version", "versionstring", "edition", "productname")
            info.add_metric([snap.node, *(result.info.get(k, "") for k in keys)], 1.0)
    return [up, state, ok, seconds, info]


class StorageCollector(Collector):
    """Reads a fresh snapshot on every scrape; ``describe`` keeps registration cheap."""

    def __init__(self, snapshot: Callable[[], Snapshot], top: int) -> None:
        self.snapshot = snapshot
        self.top = top

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from families(self.snapshot(), self.top)


# --- /status ----------------------------------------------------------------------------


def mount_document(mount: MountStatus, top: int) -> dict[str, Any]:
    result = mount.result
    return {
        "path": mount.path,
        "state": mount.state,
        "since": mount.since or None,
        "operations": {
            op.op: {"outcome": op.outcome, "seconds": op.seconds, "error": op.error}
            for op in (result.ops if result is not None else ())
        },
        "capacity": dict(mount.capacity) if mount.capacity is not None else None,
        "top_users": top_users(mount.usage or {}, top),
        "usage_scan_stalled": mount.scan_stalled,
    }


def status_document(snap: Snapshot, top: int) -> dict[str, Any]:
    """What ``/status`` serves. ``hung`` and ``servers`` are what the culler reads: every
    user server on this node (None: the Docker engine did not answer) and the hung mounts."""
    owncloud = snap.owncloud
    return {
        "node": snap.node,
        "hung": snap.hung,
        "servers": None
        if snap.servers is None
        else [{"user": s.user, "server": s.server, "container": s.container} for s in snap.servers],
        "servers_on_hung_storage": [
            {"user": s.user, "server": s.server, "container": s.container, "mount": mount}
            for s, mount in snap.affected()
        ],
        "mounts": {m.name: mount_document(m, top) for m in snap.mounts},
        "nfs": {
            name: None
            if r is None
            else {"state": r.state, "calls": {k: vars(c) for k, c in r.calls.items()}}
            for name, r in snap.nfs.items()
        },
        "owncloud": None
        if owncloud is None
        else {
            "state": owncloud.state,
            "up": owncloud.up,
            "checks": {k: vars(c) for k, c in owncloud.checks.items()},
            "info": owncloud.info,
        },
    }


# --- PRTG ---------------------------------------------------------------------------------

HUNG = prtg.Limits(max_error=0.5, error_msg="the mount does not answer")
DOWN = prtg.Limits(min_error=0.5, error_msg="down")


def sensor(snap: Snapshot, top: int) -> prtg.Payload:
    """``/prtg/storage``: per mount hung, probe time, free space and inodes, top homes;
    per NFS server up and NULL time; Owncloud up, maintenance and times."""
    if not snap.mounts and not snap.nfs and snap.owncloud is None:
        return prtg.error("no mounts, NFS servers or Owncloud configured in [storage]")
    channels: list[dict[str, Any]] = []
    texts = []
    for mount in snap.mounts:
        name = mount.name
        channels.append(prtg.channel(f"{name} hung", int(mount.state == "hung"), limits=HUNG))
        result = mount.result
        if result is not None:
            probe_ms = sum(op.seconds or 0.0 for op in result.ops) * 1000
            channels.append(prtg.channel(f"{name} probe time", probe_ms, "TimeResponse"))
        if mount.capacity is not None:
            c = mount.capacity
            channels += [
                prtg.channel(f"{name} free", c["free_bytes"], "BytesDisk", volume_size="GigaByte"),
                prtg.channel(f"{name} free space", percent(c["free_bytes"], c["size_bytes"]),
                             "Percent", limits=prtg.Limits(min_warning=10, min_error=5)),
                prtg.channel(f"{name} free inodes", percent(c["free_inodes"], c["inodes"]),
                             "Percent", limits=prtg.Limits(min_warning=10, min_error=5)),
            ]  # fmt: skip
        texts.append(f"{name} {mount.state}")
    for name, result in snap.nfs.items():
        if result is None:
            continue
        channels.append(prtg.channel(f"NFS {name} up", int(result.up), limits=DOWN))
        null = result.calls.get("null")
        if null is not None and null.ok:
            channels.append(
                prtg.channel(f"NFS {name} RPC time", null.seconds * 1000, "TimeResponse")
            )
        texts.append(f"NFS {name} {result.state}")
    if snap.owncloud is not None:
        oc = snap.owncloud
        channels.append(prtg.channel("Owncloud up", int(oc.up), limits=DOWN))
        channels.append(prtg.channel("Owncloud maintenance", int(oc.state == "maintenance")))
        for check, found in oc.checks.items():
            channels.append(prtg.channel(f"Owncloud {check} time", found.seconds * 1000,
                                         "TimeResponse"))  # fmt: skip
        texts.append(f"Owncloud {oc.state}")
    affected = snap.affected()
    if affected:
        names = ", ".join(f"{s.user}/{s.server}" if s.server else s.user for s, _ in affected)
        texts.append(f"servers on hung storage on {snap.node}: {names}")
    room = prtg.MAX_CHANNELS - len(channels)
    for mount in snap.mounts:
        users = top_users(mount.usage or {}, min(top, max(room, 0)))
        room -= len(users)
        channels += [
            prtg.channel(f"{mount.name} home {user}", size, "BytesDisk", volume_size="GigaByte")
            for user, size in users
        ]
    return prtg.sensor(channels, f"{snap.node}: " + "; ".join(texts))
