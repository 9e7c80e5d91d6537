"""Docker stats API answers (fallback), rates, the text exposition and snapshots."""

import dataclasses
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hubkeeper.watchers.containers.cgroup import CgroupReader
from hubkeeper.watchers.containers.collector import (
    Collector,
    _Previous,
    baseline,
    render,
    with_rates,
)
from hubkeeper.watchers.containers.dockerstats import stats_from_api
from hubkeeper.watchers.containers.model import ContainerInfo, DeviceIO, InterfaceIO, Sample, Stats

FIXTURES = Path(__file__).parent / "fixtures"
ID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
INFO = ContainerInfo(
    id=ID, name="jupyter-alice", image="img", user="alice", server="", hub="lab",
    started_at=1000.0, memory_limit=67108864, host_network=False,
)  # fmt: skip

V1_BODY = {  # shape of a cgroup v1 engine's one-shot answer (recorded here, trimmed)
    "read": "2026-11-25T17:16:33.420069042Z",
    "pids_stats": {"current": 3},
    "blkio_stats": {
        "io_service_bytes_recursive": [
            {"major": 8, "minor": 0, "op": "Read", "value": 4096},
            {"major": 8, "minor": 0, "op": "Write", "value": 8192},
        ],
        "io_serviced_recursive": [
            {"major": 8, "minor": 0, "op": "Read", "value": 1},
            {"major": 8, "minor": 0, "op": "Write", "value": 2},
        ],
    },
    "cpu_stats": {
        "cpu_usage": {
            "total_usage": 22062483,
            "usage_in_kernelmode": 10000000,
            "usage_in_usermode": 10000000,
        },
        "throttling_data": {"periods": 10, "throttled_periods": 2, "throttled_time": 5000000},
    },
    "memory_stats": {
        "usage": 577536,
        "max_usage": 4083712,
        "stats": {"total_inactive_file": 4096, "total_rss": 98304, "total_cache": 12288},
        "limit": 25_000_000_000,  # the host's memory: the container has no limit of its own
    },
    "networks": {"eth0": {"rx_bytes": 10, "rx_packets": 1, "tx_bytes": 20, "tx_packets": 2}},
}
V2_BODY = {  # a cgroup v2 engine: memory stats carry v2 names, I/O ops are lower case
    "pids_stats": {"current": 7, "limit": 100},
    "blkio_stats": {
        "io_service_bytes_recursive": [
            {"major": 8, "minor": 0, "op": "read", "value": 1},
            {"major": 8, "minor": 0, "op": "write", "value": 2},
        ]
    },
    "cpu_stats": {"cpu_usage": {"total_usage": 2_450_000_000}},
    "memory_stats": {
        "usage": 157286400,
        "stats": {"inactive_file": 41943040, "anon": 104857600, "file": 52428800},
        "limit": 536870912,
    },
}


def test_stats_from_a_cgroup_v1_engine() -> None:
    stats = stats_from_api(V1_BODY, INFO)
    assert stats.cpu_seconds == pytest.approx(0.022062483)
    assert (stats.cpu_user_seconds, stats.cpu_system_seconds) == (0.01, 0.01)
    assert (stats.cpu_periods, stats.cpu_throttled_periods) == (10, 2)
    assert stats.cpu_throttled_seconds == pytest.approx(0.005)
    assert (stats.memory_usage, stats.memory_working_set) == (577536, 573440)
    assert stats.memory_limit == 67108864  # from inspect, not the API's host total
    assert (stats.memory_rss, stats.memory_cache, stats.memory_max_usage) == (98304, 12288, 4083712)
    assert stats.threads == 3
    assert stats.io == (DeviceIO("8:0", 4096, 8192, 1, 2),)
    assert stats.network == (InterfaceIO("eth0", 10, 1, 0, 0, 20, 2, 0, 0),)
    host = stats_from_api(V1_BODY, dataclasses.replace(INFO, host_network=True))
    assert host.network == ()  # the host's interfaces are not the container's


def test_stats_from_a_cgroup_v2_engine() -> None:
    stats = stats_from_api(V2_BODY, INFO)
    assert stats.memory_working_set == 157286400 - 41943040
    assert (stats.memory_rss, stats.memory_cache) == (104857600, 52428800)
    assert (stats.threads, stats.threads_max) == (7, 100)
    assert stats.io == (DeviceIO("8:0", 1, 2, 0, 0),)


def test_stopped_container_answer_is_no_stats() -> None:
    body = {"read": "0001-01-01T00:00:00Z", "cpu_stats": {"cpu_usage": {}}, "memory_stats": {}}
    assert stats_from_api(body, INFO) is None


def test_rates_against_the_previous_sample_or_since_start() -> None:
    stats = Stats(
        cpu_seconds=30.0, memory_usage=1, memory_working_set=1, cpu_periods=200,
        cpu_throttled_periods=50,
    )  # fmt: skip
    assert with_rates(INFO, stats, 1060.0, None) == (0.5, None)  # 30 s of CPU in 60 s
    previous = _Previous(time=1050.0, cpu_seconds=25.0, periods=100, throttled=0)
    assert with_rates(INFO, stats, 1060.0, previous) == (0.5, 0.5)
    restarted = _Previous(time=1050.0, cpu_seconds=99.0, periods=None, throttled=None)
    assert with_rates(INFO, stats, 1060.0, restarted) == (0.0, None)
    assert with_rates(dataclasses.replace(INFO, started_at=0.0), stats, 1060.0, None) == (
        None,
        None,
    )


def sample(**info: object) -> Sample:
    return Sample(
        info=dataclasses.replace(INFO, **info),
        stats=stats_from_api(V1_BODY, INFO),
        time=2000.0,
        source="api",
        cgroup=f"/docker/{ID}",
        user=str(info.get("user", "alice")),
        server="",
        cpu_rate=0.25,
    )


def test_render_is_valid_exposition_with_cadvisor_names_and_labels() -> None:
    text = render((sample(), sample(id="f" * 64, name="jupyter-a-2db", user='a"b\\c\nd')), "n1")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    usage = families["container_cpu_usage_seconds"]
    assert usage.type == "counter"
    first = usage.samples[0]
    assert first.name == "container_cpu_usage_seconds_total"
    assert first.labels == {
        "id": f"/docker/{ID}",
        "name": "jupyter-alice",
        "image": "img",
        "jupyterhub_user": "alice",
        "jupyterhub_server": "",
        "hub": "lab",
        "node": "n1",
        "cpu": "total",
    }
    assert first.value == pytest.approx(0.022062483)
    assert usage.samples[1].labels["jupyterhub_user"] == 'a"b\\c\nd'  # escaped and parsed back
    for name in (
        "container_memory_working_set_bytes",
        "container_memory_usage_bytes",
        "container_spec_memory_limit_bytes",
        "container_memory_rss",
        "container_threads",
        "container_start_time_seconds",
        "container_last_seen",
    ):
        assert families[name].type == "gauge" and len(families[name].samples) == 2, name
    assert "container_oom_events" not in families  # the stats API has no OOM count
    reads = families["container_fs_reads_bytes"]
    assert reads.samples[0].labels["device"] == "8:0" and reads.samples[0].value == 4096
    rx = families["container_network_receive_bytes"]
    assert rx.samples[0].labels["interface"] == "eth0" and rx.samples[0].value == 10
    assert "container_cpu_cfs_periods" in families  # the container has CFS periods
    assert render((), "n1") == ""  # nothing running: no series at all


class Inventory:
    """Discovery's interface, fed by the test."""

    def __init__(self, containers: tuple[ContainerInfo, ...]) -> None:
        self.items = containers
        self.up, self.error = True, ""

    def containers(self) -> tuple[ContainerInfo, ...]:
        return self.items


def test_collector_caches_snapshots_and_drops_stopped_containers() -> None:
    inventory = Inventory((dataclasses.replace(INFO, started_at=time.time() - 100),))
    cgroups = CgroupReader(str(FIXTURES / "cgroup_v2"), str(FIXTURES / "proc_v2"))
    collector = Collector(inventory, cgroups, None, "cgroup", cache_seconds=60)  # type: ignore[arg-type]
    first = collector.snapshot()
    assert [s.user for s in first.samples] == ["alice"]
    assert first.samples[0].cpu_rate == pytest.approx(2.45 / 100, rel=0.05)  # since start
    assert collector.snapshot() is first  # within cache_seconds
    inventory.items = ()
    fresh = Collector(inventory, cgroups, None, "cgroup", cache_seconds=0)  # type: ignore[arg-type]
    assert fresh.snapshot().samples == ()
    assert render(fresh.snapshot().samples, "n1") == ""


def test_collector_maps_escaped_labels_to_the_hubs_names() -> None:
    inventory = Inventory((dataclasses.replace(INFO, user="a-2db", server="my-2dgpu"),))
    cgroups = CgroupReader(str(FIXTURES / "cgroup_v2"), str(FIXTURES / "proc_v2"))
    collector = Collector(inventory, cgroups, None, "cgroup", cache_seconds=0)  # type: ignore[arg-type]
    assert collector.snapshot().samples[0].user == "a-2db"
    collector.set_known_names({"a-b": frozenset({"my-gpu"})})
    (mapped,) = collector.snapshot().samples
    assert (mapped.user, mapped.server) == ("a-b", "my-gpu")


def test_rates_use_a_baseline_at_least_the_window_old() -> None:
    history = [_Previous(t, t / 2, None, None) for t in (100.0, 103.0, 106.0, 109.0)]
    chosen, kept = baseline(history, 110.0)
    assert chosen.time == 103.0  # the newest of those at least 5 s old
    assert [s.time for s in kept] == [103.0, 106.0, 109.0]  # older ones are dropped
    assert baseline(history[2:], 110.0) == (None, history[2:])  # too recent: since start
