"""One snapshot per scrape, and its cAdvisor-named Prometheus metrics.

A snapshot is taken when a scrape (Prometheus or PRTG) asks and the previous one is older
than ``cache_seconds``; concurrent scrapes share it. Metrics come from a custom collector
that builds every family from the current snapshot, so a container that stopped is simply
absent from the next scrape.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as PrometheusCollector

from hubkeeper.watchers.containers.cgroup import CgroupReader
from hubkeeper.watchers.containers.discovery import Discovery
from hubkeeper.watchers.containers.dockerstats import StatsAPIReader
from hubkeeper.watchers.containers.model import (
    ContainerInfo,
    Sample,
    Snapshot,
    Source,
    Stats,
    real_name,
)

Mode = Literal["auto", "cgroup", "api"]
LABELS = ("id", "name", "image", "jupyterhub_user", "jupyterhub_server", "hub", "node")


@dataclass(frozen=True, slots=True)
class _Previous:
    time: float
    cpu_seconds: float
    periods: int | None
    throttled: int | None


RATE_WINDOW = 5.0  # seconds: rates over shorter spans are noise (CPU time accrues in ticks)


def baseline(history: list[_Previous], now: float) -> tuple[_Previous | None, list[_Previous]]:
    """The newest sample at least RATE_WINDOW old, and the history worth keeping."""
    old = [sample for sample in history if now - sample.time >= RATE_WINDOW]
    chosen = old[-1] if old else None
    kept = [sample for sample in history if chosen is None or sample.time >= chosen.time]
    return chosen, kept


def with_rates(
    info: ContainerInfo, stats: Stats, now: float, previous: _Previous | None
) -> tuple[float | None, float | None]:
    """CPUs in use and the share of throttled CFS periods since ``previous``.

    Without a previous sample (at least RATE_WINDOW old), the CPU rate is the average since
    the container started.
    """
    if previous is None or now <= previous.time:
        uptime = now - info.started_at
        return (stats.cpu_seconds / uptime if info.started_at and uptime > 0 else None), None
    cpu = max(0.0, stats.cpu_seconds - previous.cpu_seconds) / (now - previous.time)
    throttled = None
    if None not in (stats.cpu_periods, stats.cpu_throttled_periods, previous.periods):
        periods = (stats.cpu_periods or 0) - (previous.periods or 0)
        if periods > 0:
            delta = (stats.cpu_throttled_periods or 0) - (previous.throttled or 0)
            throttled = max(0.0, delta / periods)
    return cpu, throttled


class Collector:
    """Takes (and caches) snapshots from discovery plus the cgroup or stats-API reader."""

    def __init__(
        self,
        discovery: Discovery,
        cgroups: CgroupReader,
        api: StatsAPIReader,
        mode: Mode,
        cache_seconds: float,
    ) -> None:
        self._discovery = discovery
        self._cgroups = cgroups
        self._api = api
        self._mode: Mode = mode
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._taken = 0.0  # monotonic
        self._history: dict[str, list[_Previous]] = {}
        self._known: Mapping[str, frozenset[str]] = {}
        self.read_errors = 0

    def set_known_names(self, known: Mapping[str, frozenset[str]]) -> None:
        """The hub's users and their server names, to map escaped label values back."""
        self._known = known

    def snapshot(self) -> Snapshot:
        with self._lock:
            fresh = time.monotonic() - self._taken < self._cache_seconds
            if self._snapshot is None or not fresh:
                self._snapshot = self._collect()
                self._taken = time.monotonic()
            return self._snapshot

    @property
    def last(self) -> Snapshot | None:
        """The latest snapshot, without taking a new one."""
        return self._snapshot

    def _collect(self) -> Snapshot:
        started = time.perf_counter()
        now = time.time()
        containers = self._discovery.containers()
        # (container, stats, source, when read): rates need each reading's own time
        readings: list[tuple[ContainerInfo, Stats | None, Source, float]] = []
        for_api = []
        for info in containers:
            at = time.time()
            stats = self._cgroups.read(info) if self._mode != "api" else None
            if stats is not None:
                readings.append((info, stats, "cgroup", at))
            elif self._mode != "cgroup":
                for_api.append(info)
        if for_api:
            by_id = self._api.read_many(for_api)
            for info in for_api:
                stats, at = by_id.get(info.id, (None, now))
                readings.append((info, stats, "api", at))
        samples, errors = [], 0
        history: dict[str, list[_Previous]] = {}
        for info, stats, source, at in readings:
            if stats is None:
                errors += 1  # usually a container that stopped a moment ago
                continue
            base, kept = baseline(self._history.get(info.id, []), at)
            cpu_rate, throttled = with_rates(info, stats, at, base)
            history[info.id] = [
                *kept,
                _Previous(at, stats.cpu_seconds, stats.cpu_periods, stats.cpu_throttled_periods),
            ]
            user = real_name(info.user, self._known)
            samples.append(
                Sample(
                    info=info,
                    stats=stats,
                    time=at,
                    source=source,
                    cgroup=self._cgroups.cgroup_id(info) or f"/docker/{info.id}",
                    user=user,
                    server=real_name(info.server, self._known.get(user, frozenset())),
                    cpu_rate=cpu_rate,
                    throttled_ratio=throttled,
                )
            )
        self._history = history
        self._cgroups.forget({info.id for info in containers})
        self.read_errors += errors
        return Snapshot(
            time=now,
            duration=time.perf_counter() - started,
            docker_up=self._discovery.up,
            docker_error=self._discovery.error,
            samples=tuple(samples),
            read_errors=errors,
        )


# --- Prometheus ----------------------------------------------------------------------------

Getter = Callable[[Sample], float | int | None]

# name, type, help, value; cAdvisor's names and meanings.
_PER_CONTAINER: list[tuple[str, str, str, Getter]] = [
    (
        "container_cpu_user_seconds_total",
        "counter",
        "Cumulative user cpu time consumed in seconds.",
        lambda s: s.stats.cpu_user_seconds,
    ),
    (
        "container_cpu_system_seconds_total",
        "counter",
        "Cumulative system cpu time consumed in seconds.",
        lambda s: s.stats.cpu_system_seconds,
    ),
    (
        "container_cpu_cfs_periods_total",
        "counter",
        "Number of elapsed enforcement period intervals.",
        lambda s: s.stats.cpu_periods if s.stats.cpu_periods else None,
    ),
    (
        "container_cpu_cfs_throttled_periods_total",
        "counter",
        "Number of throttled period intervals.",
        lambda s: s.stats.cpu_throttled_periods if s.stats.cpu_periods else None,
    ),
    (
        "container_cpu_cfs_throttled_seconds_total",
        "counter",
        "Total time duration the container has been throttled.",
        lambda s: s.stats.cpu_throttled_seconds if s.stats.cpu_periods else None,
    ),
    (
        "container_memory_usage_bytes",
        "gauge",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        lambda s: s.stats.memory_usage,
    ),
    (
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set in bytes.",
        lambda s: s.stats.memory_working_set,
    ),
    (
        "container_memory_rss",
        "gauge",
        "Size of RSS in bytes.",
        lambda s: s.stats.memory_rss,
    ),
    (
        "container_memory_cache",
        "gauge",
        "Number of bytes of page cache memory.",
        lambda s: s.stats.memory_cache,
    ),
    (
        "container_memory_mapped_file",
        "gauge",
        "Size of memory mapped files in bytes.",
        lambda s: s.stats.memory_mapped_file,
    ),
    (
        "container_memory_swap",
        "gauge",
        "Container swap usage in bytes.",
        lambda s: s.stats.memory_swap,
    ),
    (
        "container_memory_max_usage_bytes",
        "gauge",
        "Maximum memory usage recorded in bytes",
        lambda s: s.stats.memory_max_usage,
    ),
    (
        "container_memory_failcnt",
        "gauge",  # a counter in cAdvisor, but without the _total suffix the client would add
        "Number of memory usage hits limits",
        lambda s: s.stats.memory_failcnt,
    ),
    (
        "container_oom_events_total",
        "counter",
        "Count of out of memory events observed for the container",
        lambda s: s.stats.oom_kills,
    ),
    (
        "container_spec_memory_limit_bytes",
        "gauge",
        "Memory limit for the container.",
        lambda s: s.memory_limit,
    ),
    (
        "container_spec_cpu_quota",
        "gauge",
        "CPU quota of the container.",
        lambda s: s.info.cpu_quota or None,
    ),
    (
        "container_spec_cpu_period",
        "gauge",
        "CPU period of the container.",
        lambda s: s.info.cpu_period or None,
    ),
    (
        "container_processes",
        "gauge",
        "Number of processes running inside the container.",
        lambda s: s.stats.processes,
    ),
    (
        "container_threads",
        "gauge",
        "Number of threads running inside the container",
        lambda s: s.stats.threads,
    ),
    (
        "container_threads_max",
        "gauge",
        "Maximum number of threads allowed inside the container, infinity if value is zero",
        lambda s: s.stats.threads_max,
    ),
    (
        "container_start_time_seconds",
        "gauge",
        "Start time of the container since unix epoch in seconds.",
        lambda s: s.info.started_at or None,
    ),
    (
        "container_last_seen",
        "gauge",
        "Last time a container was seen by the exporter",
        lambda s: s.time,
    ),
]
_DEVICE: list[tuple[str, str, str]] = [
    ("container_fs_reads_bytes_total", "Cumulative count of bytes read", "read_bytes"),
    ("container_fs_writes_bytes_total", "Cumulative count of bytes written", "write_bytes"),
    ("container_fs_reads_total", "Cumulative count of reads completed", "reads"),
    ("container_fs_writes_total", "Cumulative count of writes completed", "writes"),
]
_NETWORK: list[tuple[str, str, str]] = [
    (f"container_network_{direction}_{name}_total", f"Cumulative count of {text}", field)
    for direction, prefix in (("receive", "rx"), ("transmit", "tx"))
    for name, text, field in (
        ("bytes", f"bytes {direction}d", f"{prefix}_bytes"),
        ("packets", f"packets {direction}d", f"{prefix}_packets"),
        (
            "errors",
            f"errors encountered while {direction.removesuffix('e')}ing",
            f"{prefix}_errors",
        ),
        (
            "packets_dropped",
            f"packets dropped while {direction.removesuffix('e')}ing",
            f"{prefix}_dropped",
        ),
    )
]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isfinite(value):
        return repr(float(value))
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


def label_values(sample: Sample, node: str) -> tuple[str, ...]:
    info = sample.info
    return (sample.cgroup, info.name, info.image, sample.user, sample.server, info.hub, node)


def render(samples: tuple[Sample, ...], node: str) -> str:
    """The per-container series in Prometheus' text format (0.0.4).

    Written directly rather than through prometheus-client's Metric objects: each
    container's label set is escaped once instead of once per series, which keeps a
    scrape of 200 containers well under 100 ms. Families without series are left out.
    """

    def label_set(sample: Sample) -> str:
        values = label_values(sample, node)
        return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(LABELS, values, strict=True))

    rows = [(s, label_set(s)) for s in samples]
    out: list[str] = []

    def family(name: str, kind: str, help_text: str, lines: list[str]) -> None:
        if lines:
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
            out.extend(lines)

    family(
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed in seconds.",
        [
            f'container_cpu_usage_seconds_total{{{labels},cpu="total"}} '
            f"{_number(s.stats.cpu_seconds)}\n"
            for s, labels in rows
        ],
    )
    for name, kind, help_text, getter in _PER_CONTAINER:
        lines = []
        for sample, labels in rows:
            value = getter(sample)
            if value is not None:
                lines.append(f"{name}{{{labels}}} {_number(value)}\n")
        family(name, kind, help_text, lines)
    for name, help_text, attribute in _DEVICE:
        lines = [
            f'{name}{{{labels},device="{_escape(device.device)}"}} '
            f"{_number(getattr(device, attribute))}\n"
            for sample, labels in rows
            for device in sample.stats.io
        ]
        family(name, "counter", help_text, lines)
    for name, help_text, attribute in _NETWORK:
        lines = [
            f'{name}{{{labels},interface="{_escape(interface.interface)}"}} '
            f"{_number(getattr(interface, attribute))}\n"
            for sample, labels in rows
            for interface in sample.stats.network
        ]
        family(name, "counter", help_text, lines)
    return "".join(out)


class SelfMetrics(PrometheusCollector):
    """``hubkeeper_containers_*``: scrape duration, containers seen, engine up, errors."""

    def __init__(self, collector: Collector, extra: Callable[[], list[Metric]]) -> None:
        self._collector = collector
        self._extra = extra

    def describe(self) -> list[Metric]:
        return self._families(None)

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._collector.last)
        yield from self._extra()

    def _families(self, snapshot: Snapshot | None) -> list[Metric]:
        duration = GaugeMetricFamily(
            "hubkeeper_containers_scrape_duration_seconds",
            "Time the last snapshot of every container's statistics took.",
        )
        seen = GaugeMetricFamily(
            "hubkeeper_containers_seen",
            "User-server containers in the last snapshot, by statistics source.",
            labels=("source",),
        )
        up = GaugeMetricFamily(
            "hubkeeper_containers_docker_up", "1 if the Docker engine answered the last resync."
        )
        errors = CounterMetricFamily(
            "hubkeeper_containers_read_errors_total",
            "Containers whose statistics could not be read (most stopped a moment before).",
        )
        if snapshot is not None:
            duration.add_metric([], snapshot.duration)
            for source in ("cgroup", "api"):
                count = sum(1 for sample in snapshot.samples if sample.source == source)
                seen.add_metric([source], count)
            up.add_metric([], 1 if snapshot.docker_up else 0)
            errors.add_metric([], self._collector.read_errors)
        return [duration, seen, up, errors]
