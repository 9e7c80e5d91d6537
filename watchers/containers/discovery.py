"""Which user-server containers run: a Docker list, the events stream, periodic resyncs.

Containers are those carrying the hub's user label. ``start`` (and ``update``/``rename``)
events inspect a container into the inventory, ``die``/``destroy`` remove it at once, so a
stopped server vanishes from the next scrape. The events stream is read in bounded
windows (``since``/``until``), which needs no socket read timeout and stops within
seconds; a resync lists everything again and records whether the engine answers.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import docker
import docker.errors
import requests

from hubkeeper.config import LabelsConfig
from hubkeeper.log import get_logger
from hubkeeper.watchers.containers.model import ContainerInfo, info_from_inspect

log = get_logger(__name__)

DOCKER_API_VERSION = "1.41"  # Docker Engine 20.10+: one-shot stats
EVENT_WINDOW = 5  # seconds per events request
_ADD = {"start", "update", "rename", "unpause"}
_REMOVE = {"die", "destroy"}
_ERRORS = (docker.errors.DockerException, requests.RequestException, OSError)


def docker_api(url: str, timeout: float, connections: int) -> docker.APIClient:
    """A low-level client; it connects lazily, so an absent engine is no start-up error."""
    return docker.APIClient(
        base_url=url, version=DOCKER_API_VERSION, timeout=timeout, max_pool_size=connections
    )


class Discovery:
    """A thread-safe inventory of running user-server containers."""

    def __init__(self, api: docker.APIClient, labels: LabelsConfig) -> None:
        self._api = api
        self._labels = labels
        self._lock = threading.Lock()
        self._inventory: dict[str, ContainerInfo] = {}
        self._during_resync: list[tuple[str, ContainerInfo | None]] | None = None
        self._stopping = threading.Event()
        self._stream: Any = None
        self._thread: threading.Thread | None = None
        self.up = False
        self.error = "not contacted yet"
        self.last_sync = 0.0  # monotonic time of the last resync attempt

    def containers(self) -> tuple[ContainerInfo, ...]:
        with self._lock:
            return tuple(self._inventory.values())

    def engine_name(self) -> str | None:
        """The engine's name (its host's hostname; a Swarm node's name), None if it is down."""
        try:
            return str(self._api.info()["Name"]) or None
        except (docker.errors.DockerException, OSError, KeyError):
            return None

    # -- resync --------------------------------------------------------------------------

    def resync(self) -> None:
        """List running user-server containers again; inspect the ones not seen before."""
        self.last_sync = time.monotonic()
        with self._lock:
            self._during_resync = []  # events seen meanwhile win over the listing
        try:
            listed = self._api.containers(filters={"label": self._labels.user})
            ids = {item["Id"] for item in listed}
            with self._lock:
                known = dict(self._inventory)
            fresh = {cid: info for cid, info in known.items() if cid in ids}
            for cid in ids - set(known):
                info = self._inspect(cid)
                if info is not None:
                    fresh[cid] = info
        except _ERRORS as exc:
            with self._lock:
                self._during_resync = None
            self._mark_down(exc)
            return
        with self._lock:
            for cid, info in self._during_resync or []:
                _apply(fresh, cid, info)
            self._inventory, self._during_resync = fresh, None
        if not self.up:
            log.info("docker_engine_up", containers=len(fresh))
        self.up, self.error = True, ""

    def _inspect(self, container_id: str) -> ContainerInfo | None:
        try:
            attrs = self._api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        info = info_from_inspect(attrs, self._labels)
        running = (attrs.get("State") or {}).get("Running", False)
        return info if running else None

    def _mark_down(self, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"[:300]
        if self.up or error != self.error:
            log.warning("docker_engine_unreachable", error=error)
        self.up, self.error = False, error

    # -- events --------------------------------------------------------------------------

    def handle(self, event: dict[str, Any]) -> None:
        """Apply one container event to the inventory."""
        action = str(event.get("Action") or event.get("status") or "").split(":")[0]
        container_id = event.get("id") or (event.get("Actor") or {}).get("ID")
        if not container_id:
            return
        if action in _REMOVE:
            info = None
        elif action in _ADD:
            try:
                info = self._inspect(container_id)
            except _ERRORS:
                return  # the next resync will tell
        else:
            return
        with self._lock:
            _apply(self._inventory, container_id, info)
            if self._during_resync is not None:
                self._during_resync.append((container_id, info))

    def start(self) -> None:
        """Follow the events stream in a background thread until :meth:`close`."""
        self._thread = threading.Thread(target=self._watch, name="hubkeeper-events", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        since = int(time.time())
        filters = {"type": ["container"], "label": [self._labels.user]}
        while not self._stopping.is_set():
            if not self.up:
                self._stopping.wait(1.0)  # the resync job brings the engine back
                since = int(time.time())
                continue
            until = int(time.time()) + EVENT_WINDOW
            try:
                self._stream = self._api.events(
                    since=since, until=until, decode=True, filters=filters
                )
                for event in self._stream:
                    self.handle(event)
                since = min(until, int(time.time()))  # a stream cut short resumes from now
            except _ERRORS as exc:
                if self._stopping.is_set():
                    return
                self._mark_down(exc)
            finally:
                self._stream = None

    def close(self) -> None:
        self._stopping.set()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(*_ERRORS):
                stream.close()
        if self._thread is not None:
            self._thread.join(timeout=EVENT_WINDOW + 2)


def _apply(
    inventory: dict[str, ContainerInfo], container_id: str, info: ContainerInfo | None
) -> None:
    if info is None:
        inventory.pop(container_id, None)
    else:
        inventory[container_id] = info
