"""Restart on failure for the local stack's daemons, as production's systemd units do.

Every ``deploy/systemd/hubkeeper-*.service`` says ``Restart=on-failure``, ``RestartSec=2``
and ``RestartPreventExitStatus=2`` (exit code 2 is a configuration error: restarting would
not help). :func:`decide` is that rule, pure; :class:`Supervisor` is a thread of the
stack's own process that applies it to the daemons the stack started, and writes what it
saw and did to ``supervised.json`` beside the stack's config (atomically), which
``hubkeeper status`` shows. A process stopped on purpose (the stack's teardown, a test
that stops or kills a daemon and starts it again itself) is never restarted.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubkeeper.files import write_atomically
from hubkeeper.status import SUPERVISED_FILE

if TYPE_CHECKING:
    from hubkeeper.deploy.stack import ManagedProcess

RESTART_SEC = 2.0
PREVENT_EXIT_STATUSES = frozenset({2})
#: systemd counts these like exit code 0: a clean stop, not a failure (systemd.service(5))
CLEAN_SIGNALS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE})


@dataclass(frozen=True)
class Decision:
    """What follows an exit: ``restarting`` (at ``restart_at``), ``stopped`` (on purpose),
    ``exited`` (cleanly: not a failure) or ``failed`` (not restarted: a config error)."""

    state: str
    restart_at: float | None = None


def decide(returncode: int, exited_at: float, on_purpose: bool) -> Decision:
    """``Restart=on-failure`` with ``RestartSec`` and ``RestartPreventExitStatus`` for an exit
    with Popen's ``returncode`` (negative: killed by that signal) at ``exited_at``."""
    if on_purpose:
        return Decision("stopped")
    if returncode == 0 or -returncode in CLEAN_SIGNALS:
        return Decision("exited")
    if returncode in PREVENT_EXIT_STATUSES:
        return Decision("failed")
    return Decision("restarting", exited_at + RESTART_SEC)


def describe_exit(returncode: int) -> str:
    """``code 1`` (an exit code) or the signal's name (``SIGKILL``)."""
    if returncode >= 0:
        return f"code {returncode}"
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


@dataclass
class Record:
    """One supervised daemon: its process, the exit last seen, its restarts."""

    process: ManagedProcess
    state: str = "running"
    restarts: int = 0
    restart_at: float | None = None
    seen_exit_of: int | None = None  # the PID whose exit was decided
    last_exit: str | None = None
    last_exit_at: float | None = None
    last_restart_at: float | None = None

    def step(self, now: float) -> bool:
        """Decide a new exit or restart when due; True if anything changed."""
        if self.restart_at is not None:
            if now < self.restart_at:
                return False
            self.restart_at = None
            if self.process.restart():
                self.restarts += 1
                self.state, self.last_restart_at = "running", now
            else:  # stopped on purpose while it waited
                self.state = "stopped"
            return True
        returncode = self.process.popen.poll()
        if returncode is None or self.seen_exit_of == self.process.pid:
            return False
        self.seen_exit_of = self.process.pid
        self.last_exit, self.last_exit_at = describe_exit(returncode), now
        decision = decide(returncode, now, self.process.stopped)
        self.state, self.restart_at = decision.state, decision.restart_at
        return True

    def view(self) -> dict[str, Any]:
        return {
            "pid": self.process.pid,
            "state": self.state,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "last_exit_at": self.last_exit_at,
            "last_restart_at": self.last_restart_at,
        }


class Supervisor(threading.Thread):
    """Watches the daemons handed to :meth:`watch` every ``interval`` seconds."""

    def __init__(
        self, folder: Path, interval: float = 0.2, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(name="hubkeeper-supervisor", daemon=True)
        self.path = folder / SUPERVISED_FILE
        self.interval, self.clock = interval, clock
        self.records: dict[str, Record] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def watch(self, process: ManagedProcess) -> None:
        """Supervise ``process`` from now on; it replaces an earlier one of its name (a
        daemon stopped and started again by hand starts a new record)."""
        with self.lock:
            self.records[process.name] = Record(process)
            self.write()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            with self.lock:
                changed = [record.step(self.clock()) for record in list(self.records.values())]
                if any(changed):
                    self.write()

    def stop(self) -> None:
        """Stop supervising (before the stack stops its processes) and remove the record."""
        self.stopping.set()
        if self.is_alive():
            self.join(10)
        self.path.unlink(missing_ok=True)

    def write(self) -> None:
        document = {
            "supervisor_pid": os.getpid(),
            "policy": {
                "restart": "on-failure",
                "restart_sec": RESTART_SEC,
                "prevent_exit_statuses": sorted(PREVENT_EXIT_STATUSES),
            },
            "daemons": {name: record.view() for name, record in self.records.items()},
        }
        write_atomically(self.path, json.dumps(document, indent=2).encode())
