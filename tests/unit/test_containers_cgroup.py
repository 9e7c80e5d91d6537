"""The cgroup reader on fixture trees: v1 captured on this machine, v2 per the kernel docs."""

import shutil
from pathlib import Path

import pytest

from hubkeeper.watchers.containers.cgroup import (
    CgroupReader,
    parse_cpu_max,
    parse_flat_keyed,
    parse_io_stat,
    parse_limit,
    parse_net_dev,
    parse_proc_cgroup,
    parse_v1_blkio,
)
from hubkeeper.watchers.containers.model import ContainerInfo, DeviceIO, InterfaceIO

FIXTURES = Path(__file__).parent / "fixtures"
ID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"


def info(pid: int = 0, host_network: bool = True) -> ContainerInfo:
    return ContainerInfo(
        id=ID, name="jupyter-alice", image="img", user="alice", server="", hub="lab", pid=pid,
        host_network=host_network,
    )  # fmt: skip


def reader(version: int, tmp_path: Path | None = None) -> CgroupReader:
    root = FIXTURES / f"cgroup_v{version}"
    if tmp_path is not None:  # a copy the test may change
        root = Path(shutil.copytree(root, tmp_path / root.name))
    return CgroupReader(str(root), str(FIXTURES / f"proc_v{version}"), str(FIXTURES / "dev_block"))


def test_v1_reads_every_statistic() -> None:
    cgroups = reader(1)
    assert cgroups.version == 1
    stats = cgroups.read(info())
    assert stats is not None
    assert stats.cpu_seconds == pytest.approx(0.116552144)
    assert stats.cpu_user_seconds == pytest.approx(0.03)  # 3 ticks of 1/100 s
    assert stats.cpu_system_seconds == pytest.approx(0.07)
    assert (stats.cpu_periods, stats.cpu_throttled_periods, stats.cpu_throttled_seconds) == (
        7,
        0,
        0.0,
    )
    assert stats.memory_usage == 43421696
    assert stats.memory_working_set == 43421696 - 8388608  # usage - total_inactive_file
    assert stats.memory_limit == 134217728
    assert stats.memory_rss == 34205696
    assert stats.memory_cache == 8396800
    assert stats.memory_max_usage == 51978240
    assert (stats.memory_failcnt, stats.oom_kills) == (0, 0)
    assert (stats.processes, stats.threads, stats.threads_max) == (1, 1, 0)
    # BFQ has no data here, so the throttle layer's counters are used (as runc does)
    assert stats.io == (DeviceIO("/dev/sda", 1048576, 4194304, 16, 64),)
    assert stats.network == ()
    assert cgroups.cgroup_id(info()) == f"/docker/{ID}"


def test_v2_reads_every_statistic() -> None:
    cgroups = reader(2)
    assert cgroups.version == 2
    stats = cgroups.read(info())
    assert stats is not None
    assert stats.cpu_seconds == pytest.approx(2.45)
    assert (stats.cpu_user_seconds, stats.cpu_system_seconds) == (1.8, 0.65)
    assert (stats.cpu_periods, stats.cpu_throttled_periods) == (1200, 30)
    assert stats.cpu_throttled_seconds == pytest.approx(0.45)
    assert stats.memory_usage == 157286400
    assert stats.memory_working_set == 157286400 - 41943040  # memory.current - inactive_file
    assert stats.memory_limit == 536870912
    assert (stats.memory_rss, stats.memory_cache, stats.memory_mapped_file) == (
        104857600,
        52428800,
        8388608,
    )
    assert (stats.memory_swap, stats.memory_max_usage, stats.memory_failcnt) == (0, 209715200, None)
    assert stats.oom_kills == 1  # memory.events oom_kill, not oom
    assert (stats.processes, stats.threads, stats.threads_max) == (3, 7, 0)
    assert stats.io == (
        DeviceIO("253:0", 0, 8192, 0, 2),  # no uevent in the fixture: the number stays
        DeviceIO("/dev/sda", 1048576, 4194304, 16, 64),
    )
    assert cgroups.cgroup_id(info()) == f"/system.slice/docker-{ID}.scope"


@pytest.mark.parametrize("version", [1, 2])
def test_located_through_proc_and_network_only_with_own_namespace(version: int) -> None:
    cgroups = reader(version)
    stats = cgroups.read(info(pid=4242, host_network=False))
    assert stats is not None
    assert stats.network == (InterfaceIO("eth0", 5000000, 4000, 1, 2, 2500000, 3000, 3, 4),)
    assert reader(version).read(info(pid=4242, host_network=True)).network == ()


def test_pid_of_another_cgroup_falls_back_to_the_layouts(tmp_path: Path) -> None:
    proc = tmp_path / "proc" / "4242"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text("8:memory:/docker/someone-else\n")
    cgroups = CgroupReader(str(FIXTURES / "cgroup_v1"), str(tmp_path / "proc"))
    assert cgroups.read(info(pid=4242)) is not None
    assert cgroups.cgroup_id(info(pid=4242)) == f"/docker/{ID}"


def test_removed_cgroup_reads_none_and_files_are_reopened(tmp_path: Path) -> None:
    cgroups = reader(2, tmp_path)
    assert cgroups.read(info()) is not None
    shutil.rmtree(tmp_path / "cgroup_v2" / "system.slice")
    # a regular file survives unlinking while open; a real cgroup answers ENODEV. Either way
    # the reader must notice the directory is gone once its files are reopened:
    cgroups.forget(set())
    assert cgroups.read(info()) is None
    assert cgroups.cgroup_id(info()) is None


def test_values_are_reread_from_open_files(tmp_path: Path) -> None:
    cgroups = reader(2, tmp_path)
    assert cgroups.read(info()).memory_usage == 157286400
    current = tmp_path / "cgroup_v2" / "system.slice" / f"docker-{ID}.scope" / "memory.current"
    with current.open("r+") as handle:  # rewrite in place: the open descriptor sees it
        handle.write("157286401")
    assert cgroups.read(info()).memory_usage == 157286401


def test_unknown_container_reads_none() -> None:
    other = ContainerInfo(id="f" * 64, name="x", image="i", user="u", server="", hub="h")
    assert reader(1).read(other) is None
    assert reader(2).read(other) is None


def test_parsers() -> None:
    assert parse_flat_keyed("a 1\nb -2\n") == {"a": 1, "b": -2}
    assert parse_flat_keyed("a 1\nodd line here\nb 2\n") == {"a": 1, "b": 2}
    assert parse_limit("max\n") == 0
    assert parse_limit("9223372036854771712\n") == 0  # v1 "unlimited"
    assert parse_limit("536870912\n") == 536870912
    assert parse_cpu_max("max 100000\n") == (0, 100000)
    assert parse_cpu_max("50000 100000\n") == (50000, 100000)
    assert parse_v1_blkio("8:0 Read 5\n8:0 Write 6\nTotal 11\n") == {"8:0": {"Read": 5, "Write": 6}}
    assert parse_io_stat("8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n") == {
        "8:0": {"rbytes": 1, "wbytes": 2, "rios": 3, "wios": 4, "dbytes": 0, "dios": 0}
    }
    assert parse_proc_cgroup("0::/a.scope\n") == {"": "/a.scope"}
    assert parse_proc_cgroup("4:cpu,cpuacct:/docker/x\n1:name=systemd:/docker/x\n") == {
        "cpu": "/docker/x",
        "cpuacct": "/docker/x",
        "systemd": "/docker/x",
    }
    assert parse_net_dev("h1\nh2\n  lo: " + "1 " * 16 + "\n") == ()
