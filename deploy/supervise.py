"""Restart on failure for the local stack's daemons, as production's systemd units do.

Every ``deploy/systemd/hubkeeper-*.service`` says ``Restart=on-failure``, ``RestartSec=2``
and ``RestartPreventExitStatus=2`` (exit code 2 is a configuration error: restarting would
not help). :func:`decide` is that rule, pure; :class:`Supervisor` is a thread of the
stack's own process that applies it to the daemons the stack started, and writes what it
saw and did to ``supervised.json`` beside the stack's config (atomically), which
``hubkeeper status`` shows. A process stopped on purpose (the stack's teardown, a test
that stops or kills a daemon and starts it again itself) is never restarted.

The units' ``WatchdogSec`` is kept too: each daemon gets a ``NOTIFY_SOCKET`` (a socket of
the supervisor) and ``WATCHDOG_USEC``, and pings while it is healthy
(:mod:`hubkeeper.daemon`). One silent for longer (stopped, hung, unhealthy) is aborted as
systemd does (SIGABRT, with SIGCONT so a stopped process receives it, SIGKILL
``ABORT_GRACE`` later) and, having failed, restarted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
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
#: seconds from the watchdog's SIGABRT to SIGKILL (systemd's TimeoutAbortSec, shortened)
ABORT_GRACE = 5.0
UNITS = files("hubkeeper.deploy") / "systemd"


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


def unit_watchdog_sec(command: str) -> float | None:
    """``WatchdogSec`` of ``hubkeeper-COMMAND.service``; None without that unit or line."""
    unit = UNITS / f"hubkeeper-{command}.service"
    if not unit.is_file():
        return None
    found = re.search(r"^WatchdogSec=(\d+)$", unit.read_text(encoding="utf-8"), re.M)
    return float(found.group(1)) if found else None


def watchdog_expired(last_ping: float, now: float, watchdog_sec: float | None) -> bool:
    """Whether a daemon last heard at ``last_ping`` (or started then) has been silent for
    longer than its watchdog allows."""
    return watchdog_sec is not None and now - last_ping > watchdog_sec


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
    watchdog_sec: float | None = None
    last_ping: float = 0.0  # the last WATCHDOG=1 or READY=1, or the start
    kill_at: float | None = None  # set when the watchdog aborted the process

    def step(self, now: float) -> bool:
        """Decide a new exit, a restart or a watchdog abort when due; True if anything
        changed."""
        if self.restart_at is not None:
            if now < self.restart_at:
                return False
            self.restart_at = None
            if self.process.restart():
                self.restarts += 1
                self.state, self.last_restart_at, self.last_ping = "running", now, now
            else:  # stopped on purpose while it waited
                self.state = "stopped"
            return True
        returncode = self.process.popen.poll()
        if returncode is None:
            return self._watch(now)
        if self.seen_exit_of == self.process.pid:
            return False
        self.seen_exit_of = self.process.pid
        self.last_exit, self.last_exit_at = describe_exit(returncode), now
        if self.kill_at is not None:
            self.last_exit += " (watchdog timeout)"
            self.kill_at = None
        decision = decide(returncode, now, self.process.stopped)
        self.state, self.restart_at = decision.state, decision.restart_at
        return True

    def _watch(self, now: float) -> bool:
        """The running process's watchdog: abort it when silent too long, kill it when it
        outlives the abort."""
        if self.process.stopped:
            return False
        if self.kill_at is not None:
            if now >= self.kill_at:
                self._signal(signal.SIGKILL)
            return False
        if not watchdog_expired(self.last_ping, now, self.watchdog_sec):
            return False
        self.state, self.kill_at = "watchdog", now + ABORT_GRACE
        self._signal(signal.SIGABRT)
        self._signal(signal.SIGCONT)
        return True

    def _signal(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def view(self) -> dict[str, Any]:
        return {
            "pid": self.process.pid,
            "state": self.state,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "last_exit_at": self.last_exit_at,
            "last_restart_at": self.last_restart_at,
            "watchdog_sec": self.watchdog_sec,
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
        self.sockets: dict[str, socket.socket] = {}  # daemon name -> its NOTIFY_SOCKET
        self.socket_dir: Path | None = None
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def notify_env(self, name: str, watchdog_sec: float | None) -> dict[str, str]:
        """The environment that makes daemon ``name`` report to this supervisor as to
        systemd: its own ``NOTIFY_SOCKET`` and, with a watchdog, ``WATCHDOG_USEC``. The
        sockets are files in a short folder (the path of one is limited to 107 bytes), not
        abstract sockets, which a daemon in another network namespace could not reach."""
        with self.lock:
            if self.socket_dir is None:
                self.socket_dir = Path(tempfile.mkdtemp(prefix="hk-notify-"))
            path = self.socket_dir / name
            if name not in self.sockets:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.bind(str(path))
                sock.setblocking(False)
                self.sockets[name] = sock
        env = {"NOTIFY_SOCKET": str(path)}
        if watchdog_sec is not None:
            env["WATCHDOG_USEC"] = str(int(watchdog_sec * 1_000_000))
        return env

    def watch(self, process: ManagedProcess, watchdog_sec: float | None = None) -> None:
        """Supervise ``process`` from now on; it replaces an earlier one of its name (a
        daemon stopped and started again by hand starts a new record)."""
        with self.lock:
            self.records[process.name] = Record(
                process, watchdog_sec=watchdog_sec, last_ping=self.clock()
            )
            self.write()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.receive(self.interval)
            with self.lock:
                changed = [record.step(self.clock()) for record in list(self.records.values())]
                if any(changed):
                    self.write()

    def receive(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the daemons' notifications; a ping (``WATCHDOG=1``,
        ``READY=1``) moves the sender's ``last_ping`` on."""
        with self.lock:
            sockets = dict(self.sockets)
        if not sockets:
            self.stopping.wait(timeout)
            return
        readable, _, _ = select.select(list(sockets.values()), [], [], timeout)
        for name, sock in sockets.items():
            if sock in readable and _pinged(sock):
                with self.lock:
                    if name in self.records:
                        self.records[name].last_ping = self.clock()

    def stop(self) -> None:
        """Stop supervising (before the stack stops its processes) and remove the record."""
        self.stopping.set()
        if self.is_alive():
            self.join(10)
        for sock in self.sockets.values():
            sock.close()
        if self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
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


def _pinged(sock: socket.socket) -> bool:
    """Drain the datagrams waiting on ``sock``; True if one was a ping."""
    pinged = False
    with contextlib.suppress(BlockingIOError):
        while True:
            message = sock.recv(4096).decode(errors="replace").split("\n")
            pinged = pinged or bool({"WATCHDOG=1", "READY=1"} & set(message))
    return pinged
