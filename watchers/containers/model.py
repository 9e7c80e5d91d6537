"""Plain data passed between discovery, readers, the collector and the sensors."""

from __future__ import annotations

import re
import string
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from hubkeeper.config import LabelsConfig

Source = Literal["cgroup", "api"]


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """A running user-server container, as discovery saw it (labels carry the raw names)."""

    id: str
    name: str
    image: str
    user: str
    server: str
    hub: str
    pid: int = 0
    started_at: float = 0.0
    host_network: bool = True
    memory_limit: int = 0  # bytes, 0 = unlimited
    cpu_quota: int = 0  # microseconds per period, 0 = unlimited
    cpu_period: int = 0
    node: str = ""  # the Swarm node it runs on ("" on one engine)
    lost: bool = False  # its node is down: it may still run, but nothing reaches it


@dataclass(frozen=True, slots=True)
class DeviceIO:
    device: str
    read_bytes: int
    write_bytes: int
    reads: int
    writes: int


@dataclass(frozen=True, slots=True)
class InterfaceIO:
    interface: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


@dataclass(frozen=True, slots=True)
class Stats:
    """One reading of a container's counters and gauges; None where the source has no value."""

    cpu_seconds: float
    memory_usage: int
    memory_working_set: int
    cpu_user_seconds: float | None = None
    cpu_system_seconds: float | None = None
    cpu_periods: int | None = None
    cpu_throttled_periods: int | None = None
    cpu_throttled_seconds: float | None = None
    memory_limit: int | None = None  # bytes, 0 = unlimited
    memory_rss: int | None = None
    memory_cache: int | None = None
    memory_mapped_file: int | None = None
    memory_swap: int | None = None
    memory_max_usage: int | None = None
    memory_failcnt: int | None = None
    oom_kills: int | None = None
    processes: int | None = None
    threads: int | None = None
    threads_max: int | None = None
    io: tuple[DeviceIO, ...] = ()
    network: tuple[InterfaceIO, ...] = ()


@dataclass(frozen=True, slots=True)
class Sample:
    """A container with its statistics at ``time``, and rates against the previous sample."""

    info: ContainerInfo
    stats: Stats
    time: float
    source: Source
    cgroup: str  # cAdvisor's ``id`` label: the cgroup path, e.g. /docker/<id>
    user: str  # the hub's names (escaped label values mapped back)
    server: str
    cpu_rate: float | None = None  # CPUs in use (1.0 = one core busy)
    throttled_ratio: float | None = None  # share of CFS periods throttled

    @property
    def memory_limit(self) -> int:
        """The memory limit in bytes as the cgroup reports it, else as configured; 0: none."""
        limit = self.stats.memory_limit
        return limit if limit is not None else self.info.memory_limit

    @property
    def cpu_limit(self) -> float:
        """The CPU limit in cores; 0.0: none."""
        info = self.info
        return info.cpu_quota / info.cpu_period if info.cpu_quota and info.cpu_period else 0.0


@dataclass(frozen=True)
class Snapshot:
    """Everything one scrape reports."""

    time: float
    duration: float
    docker_up: bool
    docker_error: str
    samples: tuple[Sample, ...] = ()
    read_errors: int = 0


def info_from_inspect(attrs: dict[str, Any], labels: LabelsConfig) -> ContainerInfo | None:
    """A :class:`ContainerInfo` from ``docker inspect`` output; None if not a user server."""
    config = attrs.get("Config") or {}
    container_labels = config.get("Labels") or {}
    if labels.user not in container_labels:
        return None
    host = attrs.get("HostConfig") or {}
    state = attrs.get("State") or {}
    quota, period = int(host.get("CpuQuota") or 0), int(host.get("CpuPeriod") or 0)
    if host.get("NanoCpus"):
        period = 100_000
        quota = int(host["NanoCpus"]) * period // 1_000_000_000
    return ContainerInfo(
        id=attrs["Id"],
        name=str(attrs.get("Name", "")).lstrip("/"),
        image=container_labels.get(labels.image) or config.get("Image", ""),
        user=container_labels[labels.user],
        server=container_labels.get(labels.server, ""),
        hub=container_labels.get(labels.hub, ""),
        pid=int(state.get("Pid") or 0),
        started_at=parse_docker_time(state.get("StartedAt", "")),
        host_network=host.get("NetworkMode") == "host",
        memory_limit=int(host.get("Memory") or 0),
        cpu_quota=quota if quota > 0 else 0,
        cpu_period=period if quota > 0 else 0,
    )


def parse_docker_time(value: str) -> float:
    """Docker's RFC 3339 time with nanoseconds as unix seconds; 0.0 when unset."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", value)
    if match is None or value.startswith("0001-"):
        return 0.0
    whole, fraction, zone = match.groups()
    stamp = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone)).timestamp()
    return stamp + (float(f"0.{fraction}") if fraction else 0.0)


# --- DockerSpawner's name escaping -------------------------------------------------------

_SAFE = frozenset(string.ascii_lowercase + string.digits)
_ESCAPED = re.compile(r"(?:[a-z0-9]|-[0-9a-f]{2})*")


def spawner_escape(name: str) -> str:
    """DockerSpawner's escaping of user and server names (escapism, ``-`` as escape char)."""
    return "".join(
        c if c in _SAFE else "".join(f"-{byte:02x}" for byte in c.encode("utf-8")) for c in name
    )


def spawner_unescape(escaped: str) -> str | None:
    """The name ``escaped`` was made from, or None if it is not DockerSpawner's escaping."""
    if "-" not in escaped or _ESCAPED.fullmatch(escaped) is None:
        return None
    raw = re.sub(rb"-([0-9a-f]{2})", lambda m: bytes([int(m.group(1), 16)]), escaped.encode())
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(ord(c) < 32 for c in name) or spawner_escape(name) != escaped:
        return None  # control characters, or safe characters escaped: not DockerSpawner's
    return name


def real_name(label: str, known: Collection[str] = ()) -> str:
    """The hub's name for a label value, which may hold DockerSpawner's escaped form.

    Labels normally carry raw names (``{raw_username}``). A label set from ``{username}``
    holds the escaped form (``a-2db`` for ``a-b``); it is mapped back only to a name the
    hub knows, never guessed, since ``a-2db`` is also a valid raw name.
    """
    if not known or label in known:
        return label
    raw = spawner_unescape(label)
    return raw if raw is not None and raw in known else label
