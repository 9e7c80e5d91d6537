"""Wiring of ``hubkeeper export-containers``: discovery, readers, collector, hub, endpoint."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from hubkeeper import prtg
from hubkeeper.config import Config
from hubkeeper.endpoint import Response
from hubkeeper.hubapi import HubClient
from hubkeeper.shippers.documents import DocumentIndexer
from hubkeeper.watchers.containers import sensors
from hubkeeper.watchers.containers.collector import SelfMetrics, render
from hubkeeper.watchers.containers.documents import snapshot_documents
from hubkeeper.watchers.containers.reader import container_reader
from hubkeeper.watchers.containers.reconcile import Inventory, Reconciler, Reconciliation
from hubkeeper.watchers.containers.swarm import SwarmInventory, read_node_exporters


class ContainerExporter:
    """Everything the daemon serves, built from the config (nothing runs until started)."""

    def __init__(self, config: Config) -> None:
        section = config.containers
        self.config = config
        self.section = section
        self.docker_url = section.docker_url or config.docker.url
        self.reader = container_reader(config, section.cache_seconds)
        self.discovery, self.collector = self.reader.discovery, self.reader.collector
        self.node = section.node or self.discovery.engine_name() or socket.gethostname()
        self.reconciler: Reconciler | None = None
        self.node_pool: ThreadPoolExecutor | None = None  # reads the nodes' exporters
        token = section.hub_token or config.hub.token
        if section.reconcile != "off" and token is not None:
            client = HubClient(dataclasses.replace(config.hub, token=token))
            inventory: Inventory = self.discovery
            if section.reconcile == "cluster":
                inventory = SwarmInventory(self.reader.api, config.labels)
                self.node_pool = ThreadPoolExecutor(8, "hubkeeper-node-exporters")
            self.reconciler = Reconciler(
                client,
                inventory,
                config.jupyterhub.name,
                section.orphan_grace,
                section.reconcile,
            )
        self.settings = sensors.SensorSettings(
            top=section.prtg_top,
            memory_warning_percent=section.prtg_memory_warning,
            memory_error_percent=section.prtg_memory_error,
            cpu_warning_percent=section.prtg_cpu_warning,
            docker_url=self.docker_url,
            hub=config.jupyterhub.name,
        )
        self.registry = CollectorRegistry()
        self.registry.register(SelfMetrics(self.collector, self._hub_families))
        self.hub = config.jupyterhub.name
        self.indexer: DocumentIndexer | None = None
        if section.snapshot_interval:
            self.indexer = DocumentIndexer(
                config.shipper, self.registry, "hubkeeper_containers_snapshot"
            )

    # -- jobs ----------------------------------------------------------------------------

    def reconcile(self) -> None:
        if self.reconciler is not None:
            result = self.reconciler.run()
            if result.hub_up:
                self.collector.set_known_names(result.known)

    def snapshot_documents(self) -> list[tuple[str, dict]]:
        """The current figures and the hub's state, for the shipper's output."""
        reconciliation = self.reconciler.last if self.reconciler else None
        snapshot = self.collector.snapshot()
        # host.name: the node whose containers these are (its engine's name), as on /metrics
        return snapshot_documents(snapshot, reconciliation, self.hub, self.node)

    def health(self) -> tuple[bool, str]:
        """Healthy while the resync job keeps running (a down engine is reported, not fatal)."""
        age = time.monotonic() - self.discovery.last_sync
        engine = "up" if self.discovery.up else f"unreachable ({self.discovery.error})"
        if self.discovery.last_sync and age > 3 * self.section.resync_seconds + 30:
            return False, f"resync stalled for {age:.0f}s; Docker engine {engine}\n"
        return True, f"ok; Docker engine {engine}\n"

    # -- endpoint ------------------------------------------------------------------------

    def prtg_route(self, path: str, _query: dict[str, list[str]]) -> Response:
        snapshot = self.collector.snapshot()
        if path.rstrip("/") == "/prtg/overview":
            reconciliation = self.reconciler.last if self.reconciler else None
            return prtg.response(sensors.overview(snapshot, reconciliation, self.settings))
        if path.rstrip("/") == "/prtg/cluster" and self.node_pool is not None:
            return prtg.response(self.cluster_sensor())
        target = sensors.parse_server_path(path) if path.startswith("/prtg/servers/") else None
        if target is None:
            return 404, "text/plain; charset=utf-8", b"not found\n"
        return prtg.response(sensors.server_sensor(snapshot, *target, self.settings))

    def cluster_sensor(self) -> prtg.Payload:
        """The swarm's books, with each up node's exporter read for its servers' memory."""
        assert self.reconciler is not None and self.node_pool is not None
        last = self.reconciler.last
        up = [node for node in last.nodes if node.up] if last is not None else []
        memory: list[sensors.ServerMemory] = []
        unanswered = []
        readings = read_node_exporters(self.section.endpoint, up, self.node_pool)
        for name, (_at, text) in readings.items():
            if text is None:
                unanswered.append(name)
            else:
                memory += sensors.server_memory(text, self.hub, name)
        return sensors.cluster_overview(last, memory, unanswered, self.settings)

    def render_metrics(self) -> bytes:
        """``/metrics``: every container's series, then the exporter's own metrics."""
        snapshot = self.collector.snapshot()
        return render(snapshot.samples, self.node).encode("utf-8") + generate_latest(self.registry)

    def _hub_families(self) -> list[Metric]:
        if self.reconciler is None:
            return []
        up = GaugeMetricFamily(
            "hubkeeper_containers_hub_up", "1 if the hub API answered the last reconciliation."
        )
        families: list[Metric] = [up]
        last = self.reconciler.last
        if last is None:
            return families
        up.add_metric([], 1 if last.hub_up else 0)
        if last.hub_up:
            for name, help_text, value in (
                ("hub_servers", "Servers the hub reports ready.", last.hub_servers),
                (
                    "orphans",
                    "Running user-server containers the hub does not know.",
                    len(last.orphans),
                ),
                (
                    "missing",
                    "Servers the hub reports ready that have no container.",
                    len(last.missing),
                ),
                ("reconcile_timestamp_seconds", "When the hub was last compared.", last.time),
            ):
                families.append(
                    GaugeMetricFamily(f"hubkeeper_containers_{name}", help_text, value=value)
                )
            families += node_families(last)
        return families

    def close(self) -> None:
        if self.node_pool is not None:
            self.node_pool.shutdown(wait=False)
        self.reader.close()


def node_families(last: Reconciliation) -> list[Metric]:
    """Per Swarm node (``reconcile = "cluster"``): up, this hub's servers on it, and the
    ready servers it leaves missing while it is down."""
    if not last.nodes:
        return []
    up = GaugeMetricFamily(
        "hubkeeper_swarm_node_up",
        "1 if the Swarm manager sees the node ready, 0 if it is down.",
        labels=["node", "role"],
    )
    servers = GaugeMetricFamily(
        "hubkeeper_swarm_node_servers",
        "This hub's user servers whose task is on the node.",
        labels=["node"],
    )
    missing = GaugeMetricFamily(
        "hubkeeper_swarm_node_missing_servers",
        "Servers the hub reports ready whose task is on the node while it is down.",
        labels=["node"],
    )
    lost = Counter(server.node for server in last.missing if server.node)
    for node in last.nodes:
        up.add_metric([node.name, node.role], 1 if node.up else 0)
        servers.add_metric([node.name], last.servers_on.get(node.name, 0))
        missing.add_metric([node.name], lost[node.name])
    return [up, servers, missing]
