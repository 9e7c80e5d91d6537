"""The storage watcher's I/O: probes per mount, the usage scan, NFS, Owncloud, Docker.

Each mount has its own job (``probe_<name>``); a job waits for its probe at most
``timeout`` and for the usage scan at most ``scan_budget`` plus a second, and never
touches the mount itself. The NFS servers, Owncloud and the Docker listing have jobs of
their own, so that one slow answer delays nothing else.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

import docker.errors
import requests

from hubkeeper.config import Config
from hubkeeper.log import get_logger
from hubkeeper.watchers.containers.discovery import docker_api
from hubkeeper.watchers.storage import nfs
from hubkeeper.watchers.storage.logic import (
    MountStatus,
    ServerOnNode,
    Snapshot,
    merge_usage,
    mount_state,
    state_since,
)
from hubkeeper.watchers.storage.owncloud import Owncloud, OwncloudResult
from hubkeeper.watchers.storage.probe import MountProber, UsageScanner

log = get_logger(__name__)

SCAN_GRACE = 1.0  # seconds past the budget a scan turn may take to answer


class StorageWatcher:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.section = config.storage
        self.node = self.section.node or socket.gethostname()
        self._lock = threading.Lock()
        self._mounts = {m.name: MountStatus(m.name, m.path) for m in self.section.mounts}
        self.probers = {
            m.name: MountProber(m, self.node, self.section.timeout) for m in self.section.mounts
        }
        self.scanners = {
            m.name: UsageScanner(
                str(PurePosixPath(m.path) / m.homes), self.section.scan_budget, SCAN_GRACE
            )
            for m in self.section.mounts
            if m.homes is not None
        }
        self._nfs: dict[str, nfs.NfsCheck | None] = {s.name: None for s in self.section.nfs}
        owncloud = self.section.owncloud
        self.owncloud = Owncloud(owncloud) if owncloud.url is not None else None
        self._owncloud: OwncloudResult | None = None
        self._servers: tuple[ServerOnNode, ...] | None = None
        self.docker = docker_api(config.docker.url, 10.0, 2)
        self._last_run: dict[str, float] = {}
        self._scan_errors: dict[str, str] = {}

    def jobs(self) -> dict[str, Callable[[], None]]:
        """Every periodic job by name."""
        jobs: dict[str, Callable[[], None]] = {
            f"probe_{name}": self._probe_job(name) for name in self.probers
        }
        for server in self.section.nfs:
            jobs[f"nfs_{server.name}"] = self._nfs_job(server.name)
        if self.owncloud is not None:
            jobs["owncloud"] = self.check_owncloud
        jobs["servers"] = self.list_servers
        return jobs

    # -- mounts -------------------------------------------------------------------------------

    def _probe_job(self, name: str) -> Callable[[], None]:
        return lambda: self.probe_mount(name)

    def probe_mount(self, name: str) -> MountStatus:
        self._last_run[f"probe_{name}"] = time.monotonic()
        result = self.probers[name].probe()
        now = time.time()
        state = mount_state(result, self.section.slow)
        with self._lock:
            before = self._mounts[name]
        status = dataclasses.replace(
            before,
            state=state,
            since=state_since(before.state, before.since, state, now),
            result=result,
            capacity=result.capacity or before.capacity,
        )
        scanner = self.scanners.get(name)
        if scanner is not None and state != "hung":
            turn = scanner.turn()
            if turn is None:
                status = dataclasses.replace(status, scan_stalled=True)
            elif turn.error is not None:
                if turn.error != self._scan_errors.get(name):  # once, not every interval
                    log.warning("storage_scan_failed", mount=name, error=turn.error)
                self._scan_errors[name] = turn.error
            else:
                self._scan_errors.pop(name, None)
                usage = merge_usage(status.usage or {}, turn.done, turn.homes)
                status = dataclasses.replace(status, usage=usage, scan_stalled=False)
        with self._lock:
            self._mounts[name] = status
        if state != before.state:
            self._log_change(status, before.state)
        return status

    def _log_change(self, status: MountStatus, previous: str) -> None:
        failed = [
            {"op": op.op, "outcome": op.outcome, "error": op.error}
            for op in (status.result.ops if status.result else ())
            if op.outcome in ("failed", "hung")
        ]
        servers = [
            {"user": s.user, "server": s.server}
            for s, mount in self.snapshot().affected()
            if mount == status.name
        ]
        level = log.warning if status.state in ("hung", "failed") else log.info
        level(
            "storage_mount_state",
            node=self.node,
            mount=status.name,
            path=status.path,
            state=status.state,
            previous=previous,
            operations=failed,
            servers_on_hung_storage=servers,
        )

    # -- NFS, Owncloud, Docker ----------------------------------------------------------------

    def _nfs_job(self, name: str) -> Callable[[], None]:
        server = next(s for s in self.section.nfs if s.name == name)

        def run() -> None:
            self._last_run[f"nfs_{name}"] = time.monotonic()
            result = nfs.check(server.host, server.export, server.port, server.timeout)
            with self._lock:
                before, self._nfs[name] = self._nfs[name], result
            if before is None or before.state != result.state:
                failed = {k: c.error for k, c in result.calls.items() if not c.ok}
                level = log.info if result.up else log.warning
                level("storage_nfs_state", server=name, state=result.state, failed=failed)

        return run

    def check_owncloud(self) -> None:
        assert self.owncloud is not None
        self._last_run["owncloud"] = time.monotonic()
        result = self.owncloud.check()
        with self._lock:
            before, self._owncloud = self._owncloud, result
        if before is None or (before.state, before.up) != (result.state, result.up):
            failed = {k: c.error for k, c in result.checks.items() if not c.ok}
            level = log.info if result.up else log.warning
            level("storage_owncloud_state", state=result.state, up=result.up, failed=failed)

    def list_servers(self) -> None:
        """User-server containers on this node and the host paths they mount (Docker's list
        holds them; nothing here reads the mounts themselves)."""
        self._last_run["servers"] = time.monotonic()
        labels = self.config.labels
        try:
            listed: list[dict[str, Any]] = self.docker.containers(filters={"label": labels.user})
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            log.warning("storage_docker_failed", error=str(exc)[:300])
            servers = None
        else:
            servers = tuple(
                ServerOnNode(
                    user=item["Labels"][labels.user],
                    server=item["Labels"].get(labels.server, ""),
                    container=(item.get("Names") or ["?"])[0].lstrip("/"),
                    sources=tuple(m["Source"] for m in item.get("Mounts") or () if m.get("Source")),
                )
                for item in listed
            )
        with self._lock:
            self._servers = servers

    # -- views --------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                node=self.node,
                mounts=tuple(self._mounts.values()),
                servers=self._servers,
                nfs=dict(self._nfs),
                owncloud=self._owncloud,
            )

    def health(self) -> tuple[bool, str]:
        """Healthy while every job keeps running; a hung mount is what this daemon reports,
        not a fault of its own."""
        now = time.monotonic()
        limit = 2 * self.section.interval + self.section.timeout + self.section.scan_budget + 30
        late = sorted(job for job, at in self._last_run.items() if now - at > limit)
        if late:
            return False, f"jobs not run for {limit:.0f}s: {', '.join(late)}\n"
        hung = self.snapshot().hung
        return True, "ok" + (f"; hung: {', '.join(hung)}" if hung else "") + "\n"

    def close(self) -> None:
        for prober in self.probers.values():
            prober.close()
        for scanner in self.scanners.values():
            scanner.close()
        if self.owncloud is not None:
            self.owncloud.close()
        self.docker.close()
