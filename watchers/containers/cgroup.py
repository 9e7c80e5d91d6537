"""Container statistics read straight from the kernel's cgroup files, v1 and v2.

cgroup v1 (one hierarchy per controller, e.g. ``/sys/fs/cgroup/memory/docker/<id>/``) and
cgroup v2 (one unified hierarchy, e.g. ``/sys/fs/cgroup/system.slice/docker-<id>.scope/``)
are told apart by ``cgroup.controllers`` at the root. A container's directory comes from
``/proc/<pid>/cgroup`` of its first process, else from the layouts of Docker's cgroupfs
and systemd drivers. File formats follow the kernel's cgroup-v1 and cgroup-v2 docs.

Working set is usage minus inactive file pages, as ``docker stats`` and cAdvisor compute it.
"""

from __future__ import annotations

import errno
import os
import resource
import threading
from dataclasses import replace

from hubkeeper.watchers.containers.model import ContainerInfo, DeviceIO, InterfaceIO, Stats

V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "blkio")
# v1 "no limit" is PAGE_COUNTER_MAX pages (9223372036854771712 with 4 KiB pages).
_UNLIMITED = 2**62
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- parsers of the kernel's file formats (pure) ----------------------------------------


def parse_flat_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (memory.stat, cpu.stat, cpuacct.stat, memory.events, ...)."""
    fields = text.split()
    try:
        if len(fields) % 2 == 0:
            return dict(zip(fields[::2], map(int, fields[1::2]), strict=True))
    except ValueError:
        pass
    values: dict[str, int] = {}  # the slow way, skipping lines that are not "key integer"
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            values[key] = int(value)
    return values


def parse_limit(text: str) -> int:
    """A memory or pids limit; 0 for ``max`` (v2) or the v1 page-counter maximum."""
    value = text.strip()
    if value == "max":
        return 0
    number = int(value)
    return 0 if number >= _UNLIMITED else number


def parse_cpu_max(text: str) -> tuple[int, int]:
    """v2 ``cpu.max`` (``$MAX $PERIOD``) as (quota, period) in microseconds; quota 0 = none."""
    quota, _, period = text.strip().partition(" ")
    return (0 if quota == "max" else int(quota)), int(period or 100000)


def parse_v1_blkio(text: str) -> dict[str, dict[str, int]]:
    """v1 ``blkio.*io_service*`` files: ``MAJ:MIN Op value`` lines, per device."""
    devices: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and ":" in parts[0]:
            devices.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return devices


def parse_io_stat(text: str) -> dict[str, dict[str, int]]:
    """v2 ``io.stat``: ``MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. dbytes=.. dios=..``."""
    devices: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        device, *fields = line.split()
        devices[device] = {
            key: int(value) for key, _, value in (f.partition("=") for f in fields) if value
        }
    return devices


def parse_net_dev(text: str) -> tuple[InterfaceIO, ...]:
    """``/proc/<pid>/net/dev`` of the container's network namespace, without loopback."""
    interfaces = []
    for line in text.splitlines()[2:]:
        name, _, counters = line.partition(":")
        name = name.strip()
        values = [int(v) for v in counters.split()]
        if name == "lo" or len(values) < 16:
            continue
        interfaces.append(
            InterfaceIO(name, *values[0:4], *values[8:12])  # rx bytes/packets/errs/drop, tx ...
        )
    return tuple(interfaces)


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/<pid>/cgroup``: controller -> path (``""`` is the v2 unified hierarchy)."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller.removeprefix("name=")] = path
    return paths


def working_set(usage: int, inactive_file: int | None) -> int:
    if inactive_file is not None and inactive_file < usage:
        return usage - inactive_file
    return usage


# --- reading ------------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, _CHUNK).decode("ascii", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


_CHUNK = 1 << 16


class Gone(Exception):
    """The container's cgroup was removed (its files answer ENODEV)."""


class _Cgroup:
    """One container's cgroup directories, with its files kept open.

    Opening a cgroup file and reading it the first time costs about 20 microseconds here;
    re-reading an open one from offset 0 (``pread``) makes the kernel generate fresh
    content for about 1. Files that do not exist are remembered as such.
    """

    def __init__(self, dirs: dict[str, str], cgroup_id: str) -> None:
        self.dirs = dirs  # controller ("" on v2) -> directory
        self.cgroup_id = cgroup_id  # the path inside the hierarchy, cAdvisor's ``id`` label
        self._fds: dict[tuple[str, str], int] = {}

    def text(self, controller: str, name: str) -> str | None:
        key = (controller, name)
        fd = self._fds.get(key)
        if fd is None:
            try:
                fd = os.open(os.path.join(self.dirs[controller], name), os.O_RDONLY | os.O_CLOEXEC)
            except (OSError, KeyError) as exc:
                if getattr(exc, "errno", None) == errno.EMFILE:  # out of descriptors: no caching
                    return _read(os.path.join(self.dirs[controller], name))
                fd = -1
            self._fds[key] = fd
        if fd < 0:
            return None
        try:
            data = os.pread(fd, _CHUNK, 0)
            while len(data) % _CHUNK == 0 and data:  # a large file (cgroup.procs): read on
                more = os.pread(fd, _CHUNK, len(data))
                if not more:
                    break
                data += more
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                raise Gone from None
            return None
        return data.decode("ascii", "replace")

    def integer(self, controller: str, name: str) -> int | None:
        text = self.text(controller, name)
        try:
            return int(text) if text is not None else None
        except ValueError:
            return None

    def flat(self, controller: str, name: str) -> dict[str, int]:
        return parse_flat_keyed(self.text(controller, name) or "")

    def lines(self, controller: str, name: str) -> int | None:
        text = self.text(controller, name)
        return None if text is None else text.count("\n")

    def close(self) -> None:
        for fd in self._fds.values():
            if fd >= 0:
                os.close(fd)
        self._fds.clear()


def raise_open_file_limit() -> int:
    """Raise the soft limit of open files to the hard one (two dozen per container)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            return soft  # files are then opened per read once the limit is reached
    return max(soft, wanted)


class CgroupReader:
    """Reads :class:`Stats` of containers from the cgroup files under ``root``."""

    def __init__(
        self,
        root: str = "/sys/fs/cgroup",
        proc_root: str = "/proc",
        block_root: str = "/sys/dev/block",
    ) -> None:
        self.root = root
        self.proc_root = proc_root
        self.block_root = block_root
        self.version = 2 if os.path.exists(os.path.join(root, "cgroup.controllers")) else 1
        self._cgroups: dict[str, _Cgroup] = {}
        self._devices: dict[str, str] = {}
        self._lock = threading.Lock()

    def cgroup_id(self, info: ContainerInfo) -> str | None:
        """The container's path inside the hierarchy (``/docker/<id>``), None if not found."""
        cgroup = self._cgroups.get(info.id)
        return cgroup.cgroup_id if cgroup else None

    def forget(self, keep: set[str]) -> None:
        """Close the files of containers no longer running."""
        with self._lock:
            for container_id in set(self._cgroups) - keep:
                self._cgroups.pop(container_id).close()

    def close(self) -> None:
        self.forget(set())

    def read(self, info: ContainerInfo) -> Stats | None:
        """The container's statistics, or None when its cgroup is not (or no longer) there."""
        with self._lock:
            cgroup = self._locate(info)
            if cgroup is None:
                return None
            try:
                stats = self._read_v2(cgroup) if self.version == 2 else self._read_v1(cgroup)
            except Gone:
                stats = None
            if stats is None:
                self._cgroups.pop(info.id).close()  # gone; look again next time
                return None
        if not info.host_network and info.pid:
            net = _read(os.path.join(self.proc_root, str(info.pid), "net", "dev"))
            if net is not None:
                stats = replace(stats, network=parse_net_dev(net))
        return stats

    # -- locating ------------------------------------------------------------------------

    def _locate(self, info: ContainerInfo) -> _Cgroup | None:
        cgroup = self._cgroups.get(info.id)
        if cgroup is None:
            cgroup = self._from_proc(info) or self._from_layouts(info)
            if cgroup is not None:
                self._cgroups[info.id] = cgroup
        return cgroup

    def _controllers(self) -> tuple[str, ...]:
        return ("",) if self.version == 2 else V1_CONTROLLERS

    def _anchor(self) -> str:
        return "" if self.version == 2 else "memory"

    def _dir(self, controller: str, path: str) -> str:
        return os.path.join(self.root, controller, path.lstrip("/"))

    def _from_proc(self, info: ContainerInfo) -> _Cgroup | None:
        if not info.pid:
            return None
        text = _read(os.path.join(self.proc_root, str(info.pid), "cgroup"))
        if text is None:
            return None
        paths = parse_proc_cgroup(text)
        anchor = self._anchor()
        if anchor not in paths or info.id not in paths[anchor]:
            return None  # not this container's process (pid reused, or another namespace)
        dirs = {c: self._dir(c, paths[c]) for c in self._controllers() if c in paths}
        if not os.path.isdir(dirs[anchor]):
            return None
        return _Cgroup(dirs, paths[anchor])

    def _from_layouts(self, info: ContainerInfo) -> _Cgroup | None:
        for path in (f"/docker/{info.id}", f"/system.slice/docker-{info.id}.scope"):
            dirs = {c: self._dir(c, path) for c in self._controllers()}
            if os.path.isdir(dirs[self._anchor()]):
                return _Cgroup(dirs, path)
        return None

    # -- v1 ------------------------------------------------------------------------------

    def _read_v1(self, cg: _Cgroup) -> Stats | None:
        usage = cg.integer("memory", "memory.usage_in_bytes")
        cpu_ns = cg.integer("cpuacct", "cpuacct.usage")
        if usage is None or cpu_ns is None:
            return None
        mem = cg.flat("memory", "memory.stat")
        ticks = cg.flat("cpuacct", "cpuacct.stat")
        cpu = cg.flat("cpu", "cpu.stat")
        limit = cg.text("memory", "memory.limit_in_bytes")
        threads_max = cg.text("pids", "pids.max")

        def total(key: str) -> int | None:  # hierarchical value, else the local one
            return mem.get(f"total_{key}", mem.get(key))

        return Stats(
            cpu_seconds=cpu_ns / 1e9,
            cpu_user_seconds=ticks["user"] / _CLK_TCK if "user" in ticks else None,
            cpu_system_seconds=ticks["system"] / _CLK_TCK if "system" in ticks else None,
            cpu_periods=cpu.get("nr_periods"),
            cpu_throttled_periods=cpu.get("nr_throttled"),
            cpu_throttled_seconds=_scaled(cpu.get("throttled_time"), 1e9),
            memory_usage=usage,
            memory_working_set=working_set(usage, total("inactive_file")),
            memory_limit=parse_limit(limit) if limit else None,
            memory_rss=total("rss"),
            memory_cache=total("cache"),
            memory_mapped_file=total("mapped_file"),
            memory_swap=total("swap"),
            memory_max_usage=cg.integer("memory", "memory.max_usage_in_bytes"),
            memory_failcnt=cg.integer("memory", "memory.failcnt"),
            oom_kills=cg.flat("memory", "memory.oom_control").get("oom_kill"),
            processes=cg.lines("pids", "cgroup.procs"),
            threads=cg.integer("pids", "pids.current"),
            threads_max=parse_limit(threads_max) if threads_max else None,
            io=self._v1_io(cg),
        )

    def _v1_io(self, cg: _Cgroup) -> tuple[DeviceIO, ...]:
        # The order runc uses for `docker stats`: BFQ, then CFQ, then the throttle layer.
        for prefix in ("blkio.bfq.", "blkio.", "blkio.throttle."):
            service = parse_v1_blkio(cg.text("blkio", f"{prefix}io_service_bytes_recursive") or "")
            if service:
                ops = parse_v1_blkio(cg.text("blkio", f"{prefix}io_serviced_recursive") or "")
                return tuple(
                    DeviceIO(
                        self._device(number),
                        values.get("Read", 0),
                        values.get("Write", 0),
                        ops.get(number, {}).get("Read", 0),
                        ops.get(number, {}).get("Write", 0),
                    )
                    for number, values in sorted(service.items())
                )
        return ()

    # -- v2 ------------------------------------------------------------------------------

    def _read_v2(self, cg: _Cgroup) -> Stats | None:
        usage = cg.integer("", "memory.current")
        cpu = cg.flat("", "cpu.stat")
        if usage is None or "usage_usec" not in cpu:
            return None
        mem = cg.flat("", "memory.stat")
        limit = cg.text("", "memory.max")
        threads_max = cg.text("", "pids.max")
        io = parse_io_stat(cg.text("", "io.stat") or "")
        return Stats(
            cpu_seconds=cpu["usage_usec"] / 1e6,
            cpu_user_seconds=_scaled(cpu.get("user_usec"), 1e6),
            cpu_system_seconds=_scaled(cpu.get("system_usec"), 1e6),
            cpu_periods=cpu.get("nr_periods"),
            cpu_throttled_periods=cpu.get("nr_throttled"),
            cpu_throttled_seconds=_scaled(cpu.get("throttled_usec"), 1e6),
            memory_usage=usage,
            memory_working_set=working_set(usage, mem.get("inactive_file")),
            memory_limit=parse_limit(limit) if limit else None,
            memory_rss=mem.get("anon"),
            memory_cache=mem.get("file"),
            memory_mapped_file=mem.get("file_mapped"),
            memory_swap=cg.integer("", "memory.swap.current"),
            memory_max_usage=cg.integer("", "memory.peak"),
            oom_kills=cg.flat("", "memory.events").get("oom_kill"),
            processes=cg.lines("", "cgroup.procs"),
            threads=cg.integer("", "pids.current"),
            threads_max=parse_limit(threads_max) if threads_max else None,
            io=tuple(
                DeviceIO(
                    self._device(number),
                    values.get("rbytes", 0),
                    values.get("wbytes", 0),
                    values.get("rios", 0),
                    values.get("wios", 0),
                )
                for number, values in sorted(io.items())
            ),
        )

    def _device(self, number: str) -> str:
        """``/dev/<name>`` for ``MAJ:MIN`` (cAdvisor's ``device`` label), cached."""
        name = self._devices.get(number)
        if name is None:
            uevent = parse_uevent(_read(os.path.join(self.block_root, number, "uevent")) or "")
            name = f"/dev/{uevent['DEVNAME']}" if "DEVNAME" in uevent else number
            self._devices[number] = name
        return name


def parse_uevent(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _scaled(value: int | None, divisor: float) -> float | None:
    return None if value is None else value / divisor
