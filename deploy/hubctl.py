"""Start or stop one hub instance of the local stack, detached from the caller.

The watcher's ``start_command``/``stop_command`` for the local stack, and what the stack
itself uses: ``python -m hubkeeper.deploy.hubctl start|stop NAME`` with ``HUBKEEPER_CONFIG`` set.
Both are idempotent. ``stop`` kills the instance's whole process group (JupyterHub and its
proxy) and returns once it is gone: that is the fence.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hubkeeper.config import Config
from hubkeeper.deploy.install import hub_config_path
from hubkeeper.files import write_atomically
from hubkeeper.hub.settings import proxy_pid_file
from hubkeeper.loader import load

HUB_CONFIG = hub_config_path()


def pid_path(config: Config, name: str) -> Path:
    return Path(config.jupyterhub.state_dir) / f"hub-{name}.launched.pid"


def log_path(config: Config, name: str) -> Path:
    return Path(config.jupyterhub.state_dir) / "logs" / f"hub-{name}.log"


def launched_pid(config: Config, name: str) -> int | None:
    """The PID this module launched for ``name``, if that process still runs."""
    return _verified_pid(pid_path(config, name))


def proxy_pid(config: Config, name: str) -> int | None:
    """The PID of the instance's proxy, which JupyterHub starts in a session of its own."""
    return _verified_pid(proxy_pid_file(config.jupyterhub.state_dir, name))


def _verified_pid(pid_file: Path, slack: float = 10.0) -> int | None:
    """The PID in ``pid_file`` if that process runs and started just before the file was
    written: a PID reused by another process later started after the file."""
    try:
        pid = int(pid_file.read_text())
        written = pid_file.stat().st_mtime
        started = _start_time(pid)
    except (OSError, ValueError):
        return None
    return pid if written - slack <= started <= written + 1 else None


def _start_time(pid: int) -> float:
    """When ``pid`` started (epoch seconds); raises OSError when it is gone or a zombie."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        raise ProcessLookupError(pid)
    boot = next(
        float(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime ")
    )
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def start(config: Config, config_path: Path, name: str) -> int:
    """Launch the instance in its own session unless it already runs; return its PID."""
    config.jupyterhub.instance(name)  # unknown names fail here
    running = launched_pid(config, name)
    if running is not None:
        return running
    log_file = log_path(config, name)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HUBKEEPER_CONFIG": str(config_path),
        "HUBKEEPER_HUB_INSTANCE": name,
    }
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(HUB_CONFIG)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=config.jupyterhub.state_dir,
            start_new_session=True,
        )
    write_atomically(pid_path(config, name), str(process.pid).encode())
    return process.pid


def stop(config: Config, name: str, grace: float = 0.0, timeout: float = 10.0) -> bool:
    """Stop the hub's and its proxy's process groups (SIGTERM, SIGKILL after ``grace`` s).

    Returns True once no process of either group is left.
    """
    groups = [pid for pid in (launched_pid(config, name), proxy_pid(config, name)) if pid]
    if grace > 0:
        for pid in groups:
            _signal_group(pid, signal.SIGTERM)
        if all(_wait_gone(pid, grace) for pid in groups):
            return True
    for pid in groups:
        _signal_group(pid, signal.SIGKILL)
    return all(_wait_gone(pid, timeout) for pid in groups)


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def _wait_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pgid)
        if not _group_alive(pgid):
            return True
        time.sleep(0.05)
    return False


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (zombies waiting to be reaped do not)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # the command may contain spaces and parentheses: fields follow the last ")"
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def _reap(pid: int) -> None:
    """Collect the exit status if the hub is our own child (the stack starts it in-process)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hubkeeper.deploy.hubctl", description=__doc__)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("name", help="hub instance name from [[jupyterhub.instances]]")
    parser.add_argument("--grace", type=float, default=0.0, help="seconds between TERM and KILL")
    args = parser.parse_args(argv)
    config_path = Path(os.environ["HUBKEEPER_CONFIG"])
    config = load(config_path)
    if args.action == "start":
        print(start(config, config_path, args.name))
        return 0
    return 0 if stop(config, args.name, grace=args.grace) else 1


if __name__ == "__main__":
    sys.exit(main())
