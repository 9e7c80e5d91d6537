"""The watcher's state on disk: survives restarts, written atomically, one writer at a time."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from hubkeeper.files import try_lock, write_atomically


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


class StateStore:
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
