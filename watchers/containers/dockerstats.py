"""Fallback for engines whose cgroup files are not readable here (e.g. a remote engine).

One-shot stats calls (``stream=false&one-shot=true``, Docker API 1.41+) skip the engine's
one-second wait for a second CPU sample; they run concurrently, so a scrape costs about
one call's latency rather than one per container. CPU rates are computed by the collector
against its own previous sample, as for the cgroup reader.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterable
from typing import Any

import docker
import docker.errors
import requests

from hubkeeper.watchers.containers.cgroup import working_set
from hubkeeper.watchers.containers.model import (
    ContainerInfo,
    DeviceIO,
    InterfaceIO,
    Stats,
    parse_docker_time,
)


def stats_from_api(body: dict[str, Any], info: ContainerInfo) -> Stats | None:
    """:class:`Stats` from one stats API answer (cgroup v1 or v2 engine); None if stopped."""
    cpu = body.get("cpu_stats") or {}
    usage = cpu.get("cpu_usage") or {}
    memory = body.get("memory_stats") or {}
    if not usage.get("total_usage") or "usage" not in memory:
        return None  # a stopped container answers with zeros
    mem = memory.get("stats") or {}
    v1 = "total_inactive_file" in mem
    throttling = cpu.get("throttling_data") or {}
    pids = body.get("pids_stats") or {}
    return Stats(
        cpu_seconds=usage["total_usage"] / 1e9,
        cpu_user_seconds=_scaled(usage.get("usage_in_usermode"), 1e9),
        cpu_system_seconds=_scaled(usage.get("usage_in_kernelmode"), 1e9),
        cpu_periods=throttling.get("periods"),
        cpu_throttled_periods=throttling.get("throttled_periods"),
        cpu_throttled_seconds=_scaled(throttling.get("throttled_time"), 1e9),
        memory_usage=memory["usage"],
        memory_working_set=working_set(
            memory["usage"], mem.get("total_inactive_file" if v1 else "inactive_file")
        ),
        memory_limit=info.memory_limit,  # the API reports the host's memory when unlimited
        memory_rss=mem.get("total_rss" if v1 else "anon"),
        memory_cache=mem.get("total_cache" if v1 else "file"),
        memory_mapped_file=mem.get("total_mapped_file" if v1 else "file_mapped"),
        memory_swap=mem.get("total_swap") if v1 else None,
        memory_max_usage=memory.get("max_usage"),
        memory_failcnt=memory.get("failcnt"),
        threads=pids.get("current"),
        threads_max=pids.get("limit"),
        io=_io(body.get("blkio_stats") or {}),
        network=tuple(
            InterfaceIO(
                name,
                *(
                    int(counters.get(f"{direction}_{what}", 0))
                    for direction in ("rx", "tx")
                    for what in ("bytes", "packets", "errors", "dropped")
                ),
            )
            for name, counters in sorted((body.get("networks") or {}).items())
            if not info.host_network
        ),
    )


def _scaled(value: float | None, divisor: float) -> float | None:
    return None if value is None else value / divisor


def _io(blkio: dict[str, Any]) -> tuple[DeviceIO, ...]:
    totals: dict[str, dict[str, int]] = {}
    for key, suffix in (("io_service_bytes_recursive", "bytes"), ("io_serviced_recursive", "ops")):
        for entry in blkio.get(key) or []:
            device = f"{entry['major']}:{entry['minor']}"
            op = f"{str(entry.get('op', '')).lower()}_{suffix}"
            totals.setdefault(device, {})[op] = int(entry.get("value", 0))
    return tuple(
        DeviceIO(
            device,
            values.get("read_bytes", 0),
            values.get("write_bytes", 0),
            values.get("read_ops", 0),
            values.get("write_ops", 0),
        )
        for device, values in sorted(totals.items())
    )


class StatsAPIReader:
    """Concurrent one-shot stats calls through one Docker API client."""

    def __init__(self, api: docker.APIClient, concurrency: int, timeout: float) -> None:
        self._api = api
        self._timeout = timeout
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="hubkeeper-stats"
        )

    def read_many(self, infos: Iterable[ContainerInfo]) -> dict[str, tuple[Stats | None, float]]:
        """(stats, when the engine read them) per container id; None if failed or stopped.

        The engine samples on its own one-second tick, so an answer can be most of a second
        old: rates must use its ``read`` time, not the time it arrived.
        """
        futures = {self._pool.submit(self._one, info): info.id for info in infos}
        done, _ = concurrent.futures.wait(futures, timeout=self._timeout)
        return {
            container_id: future.result() if future in done else (None, time.time())
            for future, container_id in futures.items()
        }

    def _one(self, info: ContainerInfo) -> tuple[Stats | None, float]:
        try:
            body = self._api.stats(info.id, stream=False, one_shot=True)
        except (docker.errors.DockerException, requests.RequestException):
            return None, time.time()
        return stats_from_api(body, info), parse_docker_time(body.get("read", "")) or time.time()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
