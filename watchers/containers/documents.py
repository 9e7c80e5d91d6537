"""The snapshot the exporter indexes every ``snapshot_interval`` seconds for the dashboards:
one document per user-server container and one of the hub's state.

Fields beyond ECS live under ``hubkeeper.`` (typed in the shipper's index template); the
container documents carry the same ``user.name`` and ``container.*`` fields as the
user servers' log lines, so a dashboard can put the two side by side.
"""

from __future__ import annotations

from typing import Any

from hubkeeper.shippers.parsers import iso_from_epoch
from hubkeeper.watchers.containers.model import Sample, Snapshot
from hubkeeper.watchers.containers.reconcile import Reconciliation

CONTAINERS = "hubkeeper.containers"
HUB = "hubkeeper.hub"
SERVICE = "hubkeeper-containers"

Document = dict[str, Any]


def container_figures(sample: Sample) -> Document:
    """CPU and memory against their limits, OOM kills, processes (unknown ones left out)."""
    stats = sample.stats
    figures: Document = {
        "hubkeeper.container.memory.working_set.bytes": stats.memory_working_set,
        "hubkeeper.container.memory.usage.bytes": stats.memory_usage,
        "hubkeeper.container.memory.oom_kills": stats.oom_kills,
        "hubkeeper.container.processes": stats.processes,
        "hubkeeper.container.cpu.cores": sample.cpu_rate,
        "hubkeeper.container.cpu.throttled_ratio": sample.throttled_ratio,
    }
    if sample.memory_limit:
        figures["hubkeeper.container.memory.limit.bytes"] = sample.memory_limit
        figures["hubkeeper.container.memory.pct_of_limit"] = round(
            100.0 * stats.memory_working_set / sample.memory_limit, 3
        )
    if sample.cpu_limit:
        figures["hubkeeper.container.cpu.limit.cores"] = sample.cpu_limit
        if sample.cpu_rate is not None:
            figures["hubkeeper.container.cpu.pct_of_limit"] = round(
                100.0 * sample.cpu_rate / sample.cpu_limit, 3
            )
    return {name: value for name, value in figures.items() if value is not None}


def snapshot_documents(
    snapshot: Snapshot, reconciliation: Reconciliation | None, hub: str, host: str
) -> list[tuple[str, Document]]:
    """``(identity, document)`` pairs: each container (by id), then the hub's state."""
    common = {"@timestamp": iso_from_epoch(snapshot.time), "event.kind": "metric",
              "service.name": SERVICE, "host.name": host}  # fmt: skip
    known = reconciliation if reconciliation is not None and reconciliation.hub_up else None
    orphans = {o.container for o in known.orphans} if known else set()
    documents = []
    for sample in snapshot.samples:
        info = sample.info
        document = {
            **common,
            "event.dataset": CONTAINERS,
            "container.id": info.id,
            "container.name": info.name,
            "container.image.name": info.image,
            "user.name": sample.user,
            "labels.jupyterhub_user": sample.user,
            "labels.jupyterhub_server": sample.server,
            "labels.hub": info.hub,
            **container_figures(sample),
        }
        if known and info.hub == hub:  # only this hub's containers were compared
            document["hubkeeper.container.orphan"] = info.name in orphans
        documents.append((info.id, document))
    state: Document = {
        **common,
        "event.dataset": HUB,
        "labels.hub": hub,
        "hubkeeper.docker.up": snapshot.docker_up,
        "hubkeeper.hub.containers": sum(1 for s in snapshot.samples if s.info.hub == hub),
    }
    if reconciliation is not None:
        state["hubkeeper.hub.up"] = reconciliation.hub_up
    if known:
        state["hubkeeper.hub.servers"] = known.hub_servers
        state["hubkeeper.hub.orphans"] = len(known.orphans)
        state["hubkeeper.hub.missing"] = len(known.missing)
    documents.append((f"{HUB}:{hub}", state))
    return documents
