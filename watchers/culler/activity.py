"""CPU activity of user-server containers, for busy protection and orphans.

Reads containers with the container metrics daemon's own reader (``containers.reader``:
discovery, cgroup reader and stats-API fallback, configured by ``[containers]``), and
keeps each container's (time, CPU seconds) samples over the busy window. A server's CPU
share is the CPU time its container used between the oldest and newest sample in the
window, divided by the time between them: percent of one CPU. The samples are saved with
the culler's state, so ``--once`` runs from cron measure across runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import docker.errors

from hubkeeper.config import Config
from hubkeeper.watchers.containers.model import ContainerInfo, real_name
from hubkeeper.watchers.containers.reader import container_reader

MAX_SAMPLES = 240  # per container: bounds memory and the state file whatever the settings

History = dict[str, list[tuple[float, float]]]  # container id -> [(time, cpu seconds)]


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


class CpuActivity:
    """Samples containers on demand; thread-safe (the sampler job and the cycle share it)."""

    def __init__(
        self, config: Config, history: Mapping[str, list[list[float]]] | None = None
    ) -> None:
        self.window = config.culler.busy_window
        self.min_span = config.culler.busy_min_span
        self.hub = config.jupyterhub.name
        self.reader = container_reader(config, cache_seconds=0.0)
        self.api, self.discovery = self.reader.api, self.reader.discovery
        self.collector = self.reader.collector
        self._lock = threading.Lock()
        self._history: History = {
            str(cid): [(float(at), float(cpu)) for at, cpu in samples]
            for cid, samples in (history or {}).items()
        }
        self._sampling = threading.Lock()  # one listing and reading at a time

    def sample(self) -> tuple[ContainerInfo, ...]:
        """List the containers and read their CPU counters once; return this hub's containers."""
        with self._sampling:
            self.discovery.resync()
            snapshot = self.collector.snapshot()
        with self._lock:
            history: History = {}
            for sample in snapshot.samples:
                kept = self._history.get(sample.info.id, [])
                history[sample.info.id] = prune(
                    [*kept, (sample.time, sample.stats.cpu_seconds)], sample.time, self.window
                )
            self._history = history
        return self.containers()

    def containers(self) -> tuple[ContainerInfo, ...]:
        return tuple(info for info in self.discovery.containers() if info.hub == self.hub)

    def shortest_span(self, now: float) -> float:
        """How far back the samples of the least-measured running container reach."""
        running = self.containers()
        with self._lock:
            spans = [
                now - self._history[info.id][0][0] if self._history.get(info.id) else 0.0
                for info in running
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
            for info in self.containers():
                share = cpu_share(self._history.get(info.id, []), self.min_span)
                if share is not None:
                    key = server_key(info, known)
                    result[key] = max(share, result.get(key, 0.0))
        return result

    @property
    def docker_up(self) -> bool:
        return self.discovery.up

    def history(self) -> History:
        with self._lock:
            return {cid: list(samples) for cid, samples in self._history.items()}

    def remove(self, container_id: str) -> bool:
        """Stop (10 s grace) and remove a container by id; False if it was already gone."""
        try:
            self.api.stop(container_id, timeout=10)
            self.api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            return False
        return True

    def close(self) -> None:
        self.reader.close()
