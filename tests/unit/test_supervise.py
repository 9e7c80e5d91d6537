"""The local stack's supervisor: systemd's ``Restart=on-failure`` as the units state it, on
real short-lived processes with a clock the test sets."""

import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hubkeeper.deploy.stack import ManagedProcess
from hubkeeper.deploy.supervise import (
    RESTART_SEC,
    Decision,
    Record,
    Supervisor,
    decide,
    describe_exit,
    unit_watchdog_sec,
    watchdog_expired,
)
from hubkeeper.status import render_supervised, supervised

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"


def test_every_hubkeeper_unit_states_the_policy_the_supervisor_applies() -> None:
    units = sorted(UNITS.glob("hubkeeper-*.service"))
    assert len(units) >= 5
    for unit in units:
        lines = unit.read_text().splitlines()
        assert "Restart=on-failure" in lines, unit.name
        assert f"RestartSec={RESTART_SEC:g}" in lines, unit.name
        assert "RestartPreventExitStatus=2" in lines, unit.name


@pytest.mark.parametrize(
    "returncode", [1, 3, 75, -signal.SIGKILL, -signal.SIGSEGV, -signal.SIGABRT]
)
def test_a_failure_is_restarted_restart_sec_after_it(returncode: int) -> None:
    assert decide(returncode, 100.0, on_purpose=False) == Decision("restarting", 100.0 + 2.0)


def test_exit_code_2_a_configuration_error_is_not_restarted() -> None:
    assert decide(2, 100.0, on_purpose=False) == Decision("failed")


@pytest.mark.parametrize(
    "returncode", [0, -signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP, -signal.SIGPIPE]
)
def test_a_clean_exit_is_not_a_failure(returncode: int) -> None:
    assert decide(returncode, 100.0, on_purpose=False) == Decision("exited")


@pytest.mark.parametrize("returncode", [0, 1, 2, -signal.SIGKILL])
def test_a_stop_on_purpose_is_never_restarted(returncode: int) -> None:
    assert decide(returncode, 100.0, on_purpose=True) == Decision("stopped")


def test_exits_are_described_by_code_or_signal_name() -> None:
    assert describe_exit(2) == "code 2"
    assert describe_exit(-signal.SIGKILL) == "SIGKILL"


def test_the_watchdog_is_the_units_watchdog_sec() -> None:
    assert unit_watchdog_sec("ship-logs") == 60
    assert unit_watchdog_sec("watch-hubs") == 120
    assert unit_watchdog_sec("cull") is None  # no unit: the hub may manage it


def test_a_daemon_silent_longer_than_its_watchdog_allows_has_expired() -> None:
    assert not watchdog_expired(100.0, 160.0, 60.0)
    assert watchdog_expired(100.0, 160.1, 60.0)
    assert not watchdog_expired(100.0, 1e9, None)


def launch(code: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", code], start_new_session=True, env={**os.environ, **(env or {})}
    )


def daemon(
    code: str = "import time; time.sleep(60)", env: dict[str, str] | None = None
) -> ManagedProcess:
    start = functools.partial(launch, code, env)
    return ManagedProcess("export-containers", start(), relaunch=start)


PINGING = """
import os, socket, time
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
    sock.connect(os.environ["NOTIFY_SOCKET"])
    for _ in range(600):
        sock.send(b"WATCHDOG=1")
        time.sleep(0.1)
"""


def supervise_until(supervisor: Supervisor, done: Callable[[Record], bool]) -> Record:
    """Let ``supervisor`` receive and step on the real clock until ``done`` (at most 15 s)."""
    record = supervisor.records["export-containers"]
    deadline = time.monotonic() + 15
    while not done(record):
        assert time.monotonic() < deadline, record.view()
        supervisor.receive(0.1)
        record.step(time.time())
    return record


def test_a_daemon_that_stops_pinging_is_aborted_and_restarted(tmp_path: Path) -> None:
    """As systemd's WatchdogSec: a daemon frozen (SIGSTOP) is aborted, counted as failed
    and started again; pings move its deadline on, so a live one is left alone."""
    supervisor = Supervisor(tmp_path, clock=time.time)
    env = supervisor.notify_env("export-containers", 1.0)
    assert env["WATCHDOG_USEC"] == "1000000"
    process = daemon(PINGING, env)
    supervisor.watch(process, 1.0)
    try:
        started = time.time()
        record = supervise_until(supervisor, lambda _: time.time() - started > 2.5)
        assert (record.state, record.restarts) == ("running", 0)  # 2.5 s, pinged all along
        first = process.pid
        os.kill(first, signal.SIGSTOP)
        record = supervise_until(supervisor, lambda r: r.restarts == 1)
        assert record.last_exit == "SIGABRT (watchdog timeout)"
        assert process.pid != first and process.running()
        record = supervise_until(supervisor, lambda r: time.time() - r.last_ping < 0.5)
        assert record.state == "running"  # the new process pings
    finally:
        process.stop()
        supervisor.stop()


def test_a_daemon_without_a_watchdog_is_never_aborted_for_silence() -> None:
    record = Record(daemon(), watchdog_sec=None, last_ping=0.0)
    try:
        assert not record.step(1e9) and record.state == "running"
    finally:
        record.process.stop()


def exited(record: Record, now: float) -> bool:
    record.process.popen.wait(10)
    return record.step(now)


def test_a_killed_daemon_is_started_again_once_restart_sec_passed() -> None:
    record = Record(daemon())
    first = record.process.pid
    os.kill(first, signal.SIGKILL)
    assert exited(record, 100.0)
    assert (record.state, record.restart_at, record.last_exit) == ("restarting", 102.0, "SIGKILL")
    assert not record.step(101.9)
    assert record.step(102.0)
    try:
        assert record.state == "running" and record.restarts == 1
        assert record.process.pid != first and record.process.running()
        assert record.view()["last_restart_at"] == 102.0
    finally:
        record.process.stop()
    assert record.step(103.0) and record.state == "stopped"  # the teardown's stop


def test_a_daemon_exiting_with_a_config_error_stays_down() -> None:
    record = Record(daemon("raise SystemExit(2)"))
    assert exited(record, 100.0)
    assert (record.state, record.last_exit) == ("failed", "code 2")
    assert not record.step(200.0) and record.restarts == 0


def test_a_daemon_killed_on_purpose_is_left_to_whoever_killed_it() -> None:
    record = Record(daemon())
    record.process.kill()
    assert exited(record, 100.0) and record.state == "stopped"
    assert not record.step(200.0) and not record.process.running()


def test_a_stop_while_the_restart_waits_cancels_it() -> None:
    record = Record(daemon("raise SystemExit(1)"))
    assert exited(record, 100.0) and record.state == "restarting"
    record.process.stop()
    assert record.step(102.0)
    assert record.state == "stopped" and record.restarts == 0 and not record.process.running()


def test_the_record_beside_the_config_shows_each_daemon_in_status(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path, clock=lambda: 100.0)
    killed, broken = daemon(), daemon("raise SystemExit(2)")
    broken.name = "cull"
    supervisor.watch(killed)
    supervisor.watch(broken)
    killed.popen.kill()
    killed.popen.wait(10)
    broken.popen.wait(10)
    supervisor.records["export-containers"].step(100.0)
    supervisor.records["export-containers"].step(102.0)
    supervisor.records["cull"].step(100.0)
    supervisor.write()
    try:
        view = supervised(tmp_path)
        assert view["source"] == f"the local stack's supervisor, process {os.getpid()}"
        assert view["daemons"]["export-containers"] == {
            "pid": killed.pid, "state": "running", "restarts": 1, "last_exit": "SIGKILL",
            "last_exit_at": 100.0, "last_restart_at": 102.0, "watchdog_sec": None,
        }  # fmt: skip
        assert render_supervised(view, now=110.0) == [
            f"daemons (restarted on failure by {view['source']})",
            "  export-containers     running    restarts 1   last exit SIGKILL 10 s ago",
            "  cull                  FAILED     restarts 0   last exit code 2 10 s ago"
            " (a configuration error: not restarted)",
        ]
    finally:
        killed.stop()
    supervisor.stop()  # never started: it only removes its record
    assert supervised(tmp_path) == {"source": "none", "daemons": {}}


def test_a_record_left_by_a_stack_that_is_gone_is_marked_stale(tmp_path: Path) -> None:
    gone = launch("pass")
    gone.wait(10)
    record = {"supervisor_pid": gone.pid, "daemons": {"cull": {}}}
    (tmp_path / "supervised.json").write_text(json.dumps(record))
    assert supervised(tmp_path)["source"].endswith("(gone: this record is stale)")
