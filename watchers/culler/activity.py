"""CPU activity of user-server containers, for busy protection and orphans; and the
proxies' own record of requests, for the last look before an idle stop (:class:`ProxyActivity`).

One engine: containers are read with the container metrics daemon's own reader
(``containers.reader``: discovery, cgroup reader and stats-API fallback, configured by
``[containers]``). A Swarm (``jupyterhub.spawner = "swarm"``): the hub's services are
listed from the manager at ``docker.url`` (:mod:`...containers.swarm`), and each server's
CPU counter is read from the container exporter on the node its task runs on: its
``/metrics``, at the node's swarm address with ``[containers].endpoint``'s port and
credentials. Decided so over Prometheus: the counters are the exporter's own reading of
that node's cgroups (what the dashboards show), seconds old rather than a scrape interval,
and a culling decision does not wait on the monitoring pipeline. A node whose exporter does
not answer leaves its servers' CPU unknown (``busy_unknown`` decides), never another's.

Each container's (time, CPU seconds) samples are kept over the busy window. A server's CPU
share is the CPU time its container used between the oldest and newest sample in the
window, divided by the time between them: percent of one CPU. The samples are saved with
the culler's state, so ``--once`` runs from cron measure across runs.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Mapping
from typing import Protocol

import docker.errors
import requests

from hubkeeper.config import Config
from hubkeeper.log import get_logger
from hubkeeper.watchers.containers.discovery import docker_api
from hubkeeper.watchers.containers.model import ContainerInfo, real_name
from hubkeeper.watchers.containers.reader import container_reader
from hubkeeper.watchers.containers.swarm import SwarmInventory, read_node_exporters, samples_of
from hubkeeper.watchers.culler.model import route_activity
from hubkeeper.watchers.hubs.probe import ProxyError, Routes, proxy_routes

log = get_logger(__name__)

MAX_SAMPLES = 240  # per container: bounds memory and the state file whatever the settings
CPU_COUNTER = "container_cpu_usage_seconds_total"

History = dict[str, list[tuple[float, float]]]  # container id -> [(time, cpu seconds)]
Reading = tuple[str, float, float]  # container id, when, CPU seconds


def cpu_share(samples: list[tuple[float, float]], min_span: float) -> float | None:
    """Percent of one CPU between the oldest and newest sample; None below ``min_span``."""
    if len(samples) < 2:
        return None
    (first_time, first_cpu), (last_time, last_cpu) = samples[0], samples[-1]
    span = last_time - first_time
    if span < min_span:
        return None
    return 100.0 * max(0.0, last_cpu - first_cpu) / span


def prune(
    samples: list[tuple[float, float]], now: float, window: float
) -> list[tuple[float, float]]:
    """Samples inside the window, at most MAX_SAMPLES of the newest."""
    return [sample for sample in samples if sample[0] >= now - window][-MAX_SAMPLES:]


def server_key(info: ContainerInfo, known: Mapping[str, frozenset[str]]) -> tuple[str, str]:
    """The hub's (user, server) for a container, mapping escaped label values back."""
    user = real_name(info.user, known)
    return user, real_name(info.server, known.get(user, frozenset()))


def task_cpu_seconds(metrics: str, services: Mapping[str, str], at: float) -> list[Reading]:
    """Readings for the services (name -> ID) from a node exporter's ``/metrics``: a task's
    container is named ``<service>.<slot>.<task id>``."""
    readings = []
    for sample in samples_of(metrics, CPU_COUNTER):
        service = sample.labels.get("name", "").split(".", 1)[0]
        if service in services and sample.labels.get("cpu", "total") == "total":
            readings.append((services[service], at, sample.value))
    return readings


class Source(Protocol):
    """Where the containers and their CPU counters come from."""

    up: bool

    def read(self) -> tuple[tuple[ContainerInfo, ...], list[Reading]]: ...

    def remove(self, container_id: str) -> bool: ...

    def close(self) -> None: ...


class EngineSource:
    """This node's engine, read as the exporter reads it."""

    def __init__(self, config: Config) -> None:
        self.reader = container_reader(config, cache_seconds=0.0)
        self.up = False

    def read(self) -> tuple[tuple[ContainerInfo, ...], list[Reading]]:
        discovery = self.reader.discovery
        discovery.resync()
        snapshot = self.reader.collector.snapshot()
        self.up = discovery.up
        readings = [(s.info.id, s.time, s.stats.cpu_seconds) for s in snapshot.samples]
        return discovery.containers(), readings

    def remove(self, container_id: str) -> bool:
        """Stop (10 s grace) and remove a container by id; False if it was already gone."""
        api = self.reader.api
        try:
            api.stop(container_id, timeout=10)
            api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            return False
        return True

    def close(self) -> None:
        self.reader.close()


class SwarmSource:
    """The swarm's services from a manager, their CPU from each node's exporter."""

    def __init__(self, config: Config) -> None:
        section = config.containers
        self.api = docker_api(config.docker.url, section.docker_timeout, 4)
        self.inventory = SwarmInventory(self.api, config.labels)
        self.endpoint = section.endpoint
        self.pool = concurrent.futures.ThreadPoolExecutor(8, "hubkeeper-cull-nodes")
        self.up = False

    def read(self) -> tuple[tuple[ContainerInfo, ...], list[Reading]]:
        try:
            nodes, entries = self.inventory.read()
        except (docker.errors.DockerException, requests.RequestException):
            self.up = False
            return (), []
        self.up = True
        on_node: dict[str, dict[str, str]] = {}  # node -> service name -> service ID
        for info in entries:
            if not info.lost:
                on_node.setdefault(info.node, {})[info.name] = info.id
        serving = [node for node in nodes.values() if node.name in on_node]
        readings = []
        for name, (at, text) in read_node_exporters(self.endpoint, serving, self.pool).items():
            if text is not None:
                readings += task_cpu_seconds(text, on_node[name], at)
        return entries, readings

    def remove(self, container_id: str) -> bool:
        return self.inventory.remove(container_id)

    def close(self) -> None:
        self.pool.shutdown(wait=False)
        self.api.close()


class CpuActivity:
    """Samples containers on demand; thread-safe (the sampler job and the cycle share it)."""

    def __init__(
        self, config: Config, history: Mapping[str, list[list[float]]] | None = None
    ) -> None:
        self.window = config.culler.busy_window
        self.min_span = config.culler.busy_min_span
        self.hub = config.jupyterhub.name
        swarm = config.jupyterhub.spawner == "swarm"
        self.source: Source = SwarmSource(config) if swarm else EngineSource(config)
        self._containers: tuple[ContainerInfo, ...] = ()
        self._lock = threading.Lock()
        self._history: History = {
            str(cid): [(float(at), float(cpu)) for at, cpu in samples]
            for cid, samples in (history or {}).items()
        }
        self._sampling = threading.Lock()  # one listing and reading at a time

    def sample(self) -> tuple[ContainerInfo, ...]:
        """List the containers and read their CPU counters once; return this hub's containers."""
        with self._sampling:
            containers, readings = self.source.read()
        with self._lock:
            history: History = {}
            for container_id, at, cpu_seconds in readings:
                kept = self._history.get(container_id, [])
                history[container_id] = prune([*kept, (at, cpu_seconds)], at, self.window)
            self._history = history
            self._containers = tuple(info for info in containers if info.hub == self.hub)
        return self._containers

    def containers(self) -> tuple[ContainerInfo, ...]:
        with self._lock:
            return self._containers

    def shortest_span(self, now: float) -> float:
        """How far back the samples of the least-measured running container reach."""
        with self._lock:  # a container on a node that is down cannot be read
            spans = [
                now - self._history[info.id][0][0] if self._history.get(info.id) else 0.0
                for info in self._containers
                if not info.lost
            ]
        return min(spans, default=float("inf"))

    def settle(self, stopping: threading.Event) -> None:
        """Sample again until every container's samples span ``min_span`` (a container whose
        first reading failed, or that just started, needs its own); wait ``min_span`` at most."""
        deadline = time.time() + self.min_span
        while (missing := self.min_span - self.shortest_span(time.time())) > 0:
            wait = min(missing, deadline - time.time())
            if wait <= 0 or stopping.wait(wait):
                return
            self.sample()

    def shares(self, known: Mapping[str, frozenset[str]]) -> dict[tuple[str, str], float]:
        """CPU percent per (user, server) with enough samples; the busiest container wins."""
        result: dict[tuple[str, str], float] = {}
        with self._lock:
            for info in self._containers:
                share = cpu_share(self._history.get(info.id, []), self.min_span)
                if share is not None:
                    key = server_key(info, known)
                    result[key] = max(share, result.get(key, 0.0))
        return result

    @property
    def docker_up(self) -> bool:
        return self.source.up

    def history(self) -> History:
        with self._lock:
            return {cid: list(samples) for cid, samples in self._history.items()}

    def remove(self, container_id: str) -> bool:
        """Remove an orphan (a container; on a Swarm, its service); False if already gone."""
        return self.source.remove(container_id)

    def close(self) -> None:
        self.source.close()


class ProxyActivity:
    """When each hub instance's proxy last saw a server used: the hub reads its proxy's
    routes only every ``last_activity_interval`` (300 s by default), so a user back within
    that is known to the proxy alone. The routing tables are read at most every
    ``max_age`` seconds, so that the stops of a mass cull share a read; thread-safe."""

    def __init__(self, config: Config, timeout: float, max_age: float = 2.0) -> None:
        self.hubs = config.jupyterhub
        self.timeout = timeout
        self.max_age = max_age
        self._lock = threading.Lock()
        self._tables: list[Routes] = []
        self._read_at = -float("inf")  # monotonic

    def last_seen(self, user: str, server: str) -> list[float | None]:
        """The server's last activity in each proxy that answered (the active one routes
        the users; a standby's or a retired one's adds nothing newer)."""
        with self._lock:
            if time.monotonic() - self._read_at > self.max_age:
                self._tables = self._read()
                self._read_at = time.monotonic()
            tables = self._tables
        return [route_activity(routes, user, server) for routes in tables]

    def _read(self) -> list[Routes]:
        tables = []
        for instance in self.hubs.instances:
            try:
                tables.append(proxy_routes(instance, self.hubs.proxy_token, self.timeout))
            except (requests.RequestException, ProxyError, ValueError) as exc:
                # down, or a standby's not started: the hub's view decides
                log.debug("proxy_unread", hub=instance.name, error=type(exc).__name__)
        return tables
