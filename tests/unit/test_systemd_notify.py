"""The daemon runner speaks systemd's notify protocol to a real datagram socket."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hubkeeper import systemd

DAEMON = textwrap.dedent(
    """
    from prometheus_client import CollectorRegistry
    from hubkeeper.config import EndpointConfig
    from hubkeeper.daemon import Daemon
    import sys
    healthy = sys.argv[1] == "healthy"
    daemon = Daemon("probe", EndpointConfig(port=0), CollectorRegistry(),
                    health=lambda: (healthy, "ok" if healthy else "stuck"))
    sys.exit(daemon.run())
    """
)


def collect(sock: socket.socket, until: str, limit: int = 50) -> list[str]:
    messages: list[str] = []
    while until not in messages and len(messages) < limit:
        messages.append(sock.recv(1024).decode())
    return messages


@pytest.fixture
def notify_socket(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(10)
    yield sock
    sock.close()


def run_daemon(tmp_path: Path, state: str, stdout: int | None = None) -> subprocess.Popen:
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
    return subprocess.Popen(
        [sys.executable, "-c", DAEMON, state], env=env, stdout=stdout, text=True
    )


def test_ready_watchdog_and_stopping(tmp_path: Path, notify_socket: socket.socket) -> None:
    daemon = run_daemon(tmp_path, "healthy")
    try:
        started = collect(notify_socket, "READY=1")
        pings = [notify_socket.recv(1024).decode() for _ in range(3)]  # every 0.2 s
    finally:
        daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
    stopped = collect(notify_socket, "STOPPING=1")
    assert set(started) <= {"READY=1", "WATCHDOG=1"}
    assert pings == ["WATCHDOG=1"] * 3
    assert set(stopped) <= {"WATCHDOG=1", "STOPPING=1"}


def test_an_unhealthy_daemon_withholds_the_watchdog(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    daemon = run_daemon(tmp_path, "stuck")
    try:
        assert notify_socket.recv(1024).decode() == "READY=1"
        notify_socket.settimeout(1.0)  # five watchdog periods of 0.2 s
        with pytest.raises(TimeoutError):
            notify_socket.recv(1024)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(10)


def test_no_socket_means_no_notification(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert systemd.watchdog_interval() is None


def test_a_broken_notify_socket_is_logged_once_and_the_daemon_carries_on(
    tmp_path: Path,
) -> None:
    daemon = run_daemon(tmp_path, "healthy", stdout=subprocess.PIPE)  # nobody bound the socket
    try:
        lines = []
        while not any("daemon_started" in line for line in lines):
            lines.append(daemon.stdout.readline())
        time.sleep(1.0)  # five more watchdog periods, each ping failing
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
    out = "".join(lines) + daemon.stdout.read()
    assert daemon.wait(10) == 0
    assert out.count("systemd_notify_failed") == 1
