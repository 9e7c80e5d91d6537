"""The whole swarm as a Swarm manager sees it: nodes, and the hub's services and tasks.

With the Swarm spawner each server is a service whose one task runs on some node. A
node's engine sees only its own containers, so the books of the whole cluster are kept
from a manager's API: a server is present when its service's task runs on a node that is
up, and *lost* when that node is down (it may still run there, but nothing reaches it).
Every hub-labelled service is listed, so a service no server owns is an orphan wherever
its task runs. Removing an orphan removes its service: removing only its container would
have the swarm start another.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import docker
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from hubkeeper.config import EndpointConfig, LabelsConfig
from hubkeeper.status import fetch
from hubkeeper.watchers.containers.model import ContainerInfo, parse_docker_time


@dataclass(frozen=True)
class SwarmNode:
    name: str  # its hostname, the ``node`` label of its exporter's series
    address: str  # where the swarm reaches it (Status.Addr)
    role: str  # manager or worker
    up: bool  # the manager sees it ready


def swarm_nodes(nodes: list[Mapping[str, Any]]) -> dict[str, SwarmNode]:
    """Node ID -> :class:`SwarmNode` from ``docker node ls`` (inspect) output."""
    return {
        node["ID"]: SwarmNode(
            name=str(node.get("Description", {}).get("Hostname", "")) or node["ID"][:12],
            address=str(node.get("Status", {}).get("Addr", "")),
            role=str(node.get("Spec", {}).get("Role", "")),
            up=node.get("Status", {}).get("State") == "ready",
        )
        for node in nodes
    }


def service_entries(
    services: list[Mapping[str, Any]],
    tasks: list[Mapping[str, Any]],
    nodes: Mapping[str, SwarmNode],
    labels: LabelsConfig,
) -> tuple[ContainerInfo, ...]:
    """One entry per hub-labelled service whose task runs (as the manager last heard), on
    that task's node: ``lost`` when the node is down. A service whose task is still being
    placed or has ended is left out, as one engine lists only running containers.

    When a node goes down the manager sets its tasks' desired state to shutdown at once
    (the node's agent stops them when it returns), while their last reported state stays
    running: such a task is the lost entry of its service."""
    placed: dict[str, Mapping[str, Any]] = {}
    for task in tasks:
        node = nodes.get(task.get("NodeID", ""))
        if task.get("Status", {}).get("State") != "running" or node is None:
            continue
        if task.get("DesiredState") == "running" or not node.up:
            placed[task["ServiceID"]] = task
    entries = []
    for service in services:
        spec = service.get("Spec", {})
        template = spec.get("TaskTemplate", {})
        container = template.get("ContainerSpec", {})
        tags = {**(container.get("Labels") or {}), **(spec.get("Labels") or {})}
        task = placed.get(service["ID"])
        if labels.user not in tags or task is None:
            continue
        node = nodes[task["NodeID"]]
        limits = template.get("Resources", {}).get("Limits", {})
        nano_cpus = int(limits.get("NanoCPUs") or 0)
        entries.append(
            ContainerInfo(
                id=service["ID"],
                name=str(spec.get("Name", "")),
                image=tags.get(labels.image) or str(container.get("Image", "")).split("@")[0],
                user=tags[labels.user],
                server=tags.get(labels.server, ""),
                hub=tags.get(labels.hub, ""),
                started_at=parse_docker_time(str(service.get("CreatedAt", ""))),
                memory_limit=int(limits.get("MemoryBytes") or 0),
                cpu_quota=nano_cpus // 10_000,
                cpu_period=100_000 if nano_cpus else 0,
                node=node.name,
                lost=not node.up,
            )
        )
    return tuple(entries)


class SwarmInventory:
    """The hub's services across the swarm, read from a manager at each call."""

    def __init__(self, api: docker.APIClient, labels: LabelsConfig) -> None:
        self._api = api
        self._labels = labels

    def nodes(self) -> dict[str, SwarmNode]:
        return swarm_nodes(self._api.nodes())

    def read(self) -> tuple[dict[str, SwarmNode], tuple[ContainerInfo, ...]]:
        """The nodes and the hub's services on them; raises the Docker client's errors when
        the manager does not answer."""
        nodes = self.nodes()
        services = self._api.services(filters={"label": self._labels.user})
        tasks = self._api.tasks()  # a lost node's tasks are no longer meant to run
        return nodes, service_entries(services, tasks, nodes, self._labels)

    def containers(self) -> tuple[ContainerInfo, ...]:
        return self.read()[1]

    def remove(self, service_id: str) -> bool:
        """Remove an orphan's service (its task's container goes with it); False if gone."""
        try:
            self._api.remove_service(service_id)
        except docker.errors.NotFound:
            return False
        return True


def read_node_exporters(
    endpoint: EndpointConfig, nodes: Iterable[SwarmNode], pool: Executor
) -> dict[str, tuple[float, str | None]]:
    """Each node's container exporter's ``/metrics`` at the node's swarm address, with
    ``endpoint``'s port and credentials, read concurrently: node name -> (when read, the
    text, or None when that exporter does not answer)."""

    def read(node: SwarmNode) -> tuple[float, str | None]:
        at = time.time()
        return at, fetch(dataclasses.replace(endpoint, listen=node.address), "/metrics")

    jobs = {node.name: pool.submit(read, node) for node in nodes}
    return {name: job.result() for name, job in jobs.items()}


def samples_of(metrics: str, name: str) -> list[Sample]:
    """The samples of one metric in an exposition; only its lines are parsed (a node
    exporter's text holds some 40 series per container)."""
    lines = [line for line in metrics.splitlines() if line.startswith((name + "{", name + " "))]
    return [sample for family in text_string_to_metric_families("\n".join(lines) + "\n")
            for sample in family.samples]  # fmt: skip
