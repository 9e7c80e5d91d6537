"""The watcher's state on disk: survives restarts, written atomically, one writer at a time."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from hubkeeper.files import try_lock, write_atomically
from hubkeeper.watchers.hubs.lease import LeaseKeeper, PostgresLeaseStore


@dataclass
class Step:
    """A failover in progress, recorded before each phase so a restart can finish it."""

    source: str
    target: str
    reason: str
    phase: str  # fencing, starting, switching
    started_at: float


@dataclass
class WatcherState:
    active: str
    generation: int = 0
    failover_times: list[float] = field(default_factory=list)
    last_failover: dict[str, Any] | None = None
    frozen: bool = False
    failed_until: dict[str, float] = field(default_factory=dict)
    unfenced: list[str] = field(default_factory=list)
    step: Step | None = None
    #: outcome of the last planned switch: target, ok, at
    last_request: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WatcherState:
        step = data.pop("step", None)
        return cls(**data, step=Step(**step) if step else None)


class Store(Protocol):
    def load(self) -> WatcherState | None: ...
    def save(self, state: WatcherState) -> None: ...
    def request_switch(self, target: str) -> None: ...
    def take_request(self) -> str | None: ...
    def try_lock(self) -> IO[str] | None: ...


class StateStore:
    """On one machine: a JSON file, and a file lock for the one watcher that acts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.request_path = path.with_name(path.name + ".request")
        self.lock_path = path.with_name(path.name + ".lock")

    def load(self) -> WatcherState | None:
        try:
            return WatcherState.from_json(json.loads(self.path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None

    def save(self, state: WatcherState) -> None:
        write_atomically(self.path, json.dumps(dataclasses.asdict(state), indent=2).encode())

    def request_switch(self, target: str) -> None:
        write_atomically(self.request_path, target.encode())

    def take_request(self) -> str | None:
        try:
            target = self.request_path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        self.request_path.unlink(missing_ok=True)
        return target or None

    def try_lock(self) -> IO[str] | None:
        """The acting lock, or None if another watcher holds it (keep the handle open)."""
        return try_lock(self.lock_path)


class SharedStateStore:
    """Watchers on several hosts: the state in the lease's database, written only by the
    holder of the live lease (the write itself checks the generation)."""

    def __init__(self, store: PostgresLeaseStore, keeper: LeaseKeeper) -> None:
        self.store = store
        self.keeper = keeper

    def load(self) -> WatcherState | None:
        data = self.store.load_state()
        return WatcherState.from_json(data) if data is not None else None

    def save(self, state: WatcherState) -> None:
        data = dataclasses.asdict(state)
        self.store.save_state(data, self.keeper.holder, self.keeper.token())

    def request_switch(self, target: str) -> None:
        self.store.request_switch(target)

    def take_request(self) -> str | None:
        return self.store.take_request()

    def try_lock(self) -> IO[str] | None:
        """Never: only the lease holder acts, so a planned switch is always handed to it."""
        return None
