"""Probes of a notebook filesystem from child processes (``child.py``) the daemon never waits for.

A filesystem that stops answering leaves the process that touched it blocked in the
kernel, and on an NFS hard mount not even SIGKILL ends it until the server answers. So
every operation on a mount runs in a child process; the daemon reads the child's JSON
lines until a deadline and no longer. A child still blocked then is sent SIGKILL (taken
when the kernel allows), kept as the mount's one outstanding child, and reaped by a later
cycle: while it lives no other probe of that mount starts, and the mount is ``hung``.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hubkeeper.config import StorageMount

CHILD = str(Path(__file__).with_name("child.py"))
OPERATIONS = ("stat", "statvfs", "write", "fsync", "read", "remove")
Outcome = Literal["ok", "failed", "hung", "not_run"]


class Child:
    """A child process running ``child.py``, read line by line without ever blocking."""

    def __init__(self, *args: str, stdin: bool = False) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-S", CHILD, *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd="/",
            start_new_session=True,  # a terminal's signals are not the daemon's business
        )
        assert self.process.stdout is not None
        self._out = self.process.stdout.fileno()
        os.set_blocking(self._out, False)
        self._buffer = b""
        self.eof = False
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid

    def read(self, deadline: float, until: Any = None) -> list[dict[str, Any]]:
        """Lines until end of output, ``until(line)`` is true, or ``deadline`` (monotonic)."""
        records: list[dict[str, Any]] = []
        with selectors.DefaultSelector() as selector:
            selector.register(self._out, selectors.EVENT_READ)
            while not self.eof:
                if self._drain(records, until):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    self._drain(records, until)
                    break
        return records

    def _drain(self, records: list[dict[str, Any]], until: Any) -> bool:
        while True:
            try:
                chunk = os.read(self._out, 65536)
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
                break
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            records.append(json.loads(line))
        return until is not None and any(until(r) for r in records)

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def exited(self) -> bool:
        """Reaped (or never blocked): no process left behind."""
        return self.process.poll() is not None

    def abandon(self) -> None:
        """SIGKILL without waiting: a process blocked in the kernel dies when it may."""
        if self.process.poll() is None:
            self.process.kill()

    def close(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


@dataclass(frozen=True)
class OpResult:
    op: str
    outcome: Outcome
    seconds: float | None = None  # for a hung operation: how long it has been waited for
    error: str | None = None


@dataclass(frozen=True)
class ProbeResult:
    """One probe of a mount: every operation's outcome and the capacity statvfs read."""

    ops: tuple[OpResult, ...]
    capacity: dict[str, int] = field(default_factory=dict)
    waited: float = 0.0  # seconds the probe (or the outstanding one) has run

    @property
    def hung(self) -> bool:
        return any(op.outcome == "hung" for op in self.ops)


def results(records: list[dict[str, Any]], hung: bool, waited: float) -> ProbeResult:
    """The outcome of every operation from a probe child's lines (pure)."""
    ended = {r["op"]: r for r in records if "ok" in r}
    started = [r["op"] for r in records if r.get("phase") == "start"]
    ops, capacity = [], {}
    for op in OPERATIONS:
        record = ended.get(op)
        if record is not None:
            outcome: Outcome = "ok" if record["ok"] else "failed"
            ops.append(OpResult(op, outcome, record["seconds"], record.get("error")))
            if op == "statvfs" and record["ok"]:
                keys = ("size_bytes", "free_bytes", "inodes", "free_inodes")
                capacity = {key: int(record[key]) for key in keys}
        elif hung and op in started:
            ops.append(OpResult(op, "hung", waited))
        else:
            ops.append(OpResult(op, "not_run"))
    return ProbeResult(tuple(ops), capacity, waited)


class MountProber:
    """Probes one mount; at most one child per mount is ever alive."""

    def __init__(self, mount: StorageMount, node: str, timeout: float) -> None:
        self.mount = mount
        self.node = node
        self.timeout = timeout
        self.outstanding: Child | None = None
        self._records: list[dict[str, Any]] = []

    def probe(self) -> ProbeResult:
        child = self.outstanding
        if child is not None:
            self._records += child.read(time.monotonic())
            if not child.exited():
                return results(self._records, True, time.monotonic() - child.started)
            child.close()
            self.outstanding = None
        name = f"{self.node}-{os.getpid()}"
        child = Child("probe", self.mount.path, self.mount.canary_dir, name)
        deadline = child.started + self.timeout
        self._records = child.read(deadline)
        if child.eof:  # it has closed its output: it is exiting (within the deadline, surely)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(max(0.0, deadline - time.monotonic()))
        if child.exited():
            child.close()
            return results(self._records, False, time.monotonic() - child.started)
        child.abandon()
        self.outstanding = child
        return results(self._records, True, time.monotonic() - child.started)

    def close(self) -> None:
        if self.outstanding is not None:
            self.outstanding.abandon()


@dataclass(frozen=True)
class ScanTurn:
    done: dict[str, int]  # home -> bytes, for homes whose walk completed in this turn
    homes: list[str] | None  # every home, when a new pass started in this turn
    error: str | None = None


class UsageScanner:
    """A long-lived child walking the homes of a mount, ``budget`` seconds per turn."""

    def __init__(self, homes: str, budget: float, grace: float) -> None:
        self.homes = homes
        self.budget = budget
        self.grace = grace
        self.child: Child | None = None
        self.waiting = False  # a turn was asked for and not answered yet

    def turn(self) -> ScanTurn | None:
        """The next turn's findings; None while the scanner does not answer (it is then
        left alone: no second scanner starts while it lives)."""
        if self.child is not None and self.child.exited():
            self.child.close()
            self.child, self.waiting = None, False
        if self.child is None:
            self.child = Child("scan", self.homes, stdin=True)
        deadline = time.monotonic()  # still waiting for an earlier turn: only look
        if not self.waiting:
            self.child.send(f"{self.budget}")
            self.waiting = True
            deadline += self.budget + self.grace
        answer = self.child.read(deadline, lambda r: True)
        if not answer:
            return None
        self.waiting = False
        last = answer[-1]
        return ScanTurn(last.get("done") or {}, last.get("homes"), last.get("error"))

    def close(self) -> None:
        if self.child is not None:
            self.child.abandon()
