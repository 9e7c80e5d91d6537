"""Run the processes of one hub instance of the local stack, detached from the caller.

An instance is three processes, each in a session of its own with a PID file in
``state_dir``: its configurable-http-proxy (``proxy-NAME.pid``), its JupyterHub, the only
one that opens the database (``hub-NAME.launched.pid``), and, while it is a standby, a warm
JupyterHub that waits for the signal to start (``hub-NAME.warm.pid``, hub/standby.py).

The watcher's commands for the local stack, and what the stack itself uses:
``python -m hubkeeper.deploy.hubctl ACTION NAME`` with ``HUBKEEPER_CONFIG`` set, where ACTION
is ``warm`` (proxy and a waiting hub), ``start`` (proxy and hub: the warm one is signalled,
else a cold one launched), ``stop`` (the fence: the hub process only, returns once it is
gone; its proxy keeps routing users to their servers) or ``retire`` (the proxy, and a warm
hub). All are idempotent.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from hubkeeper.config import Config
from hubkeeper.deploy.install import hub_config_path
from hubkeeper.files import write_atomically
from hubkeeper.hub.settings import proxy_command
from hubkeeper.loader import load

HUB_CONFIG = hub_config_path()


def pid_path(config: Config, name: str, role: str = "launched") -> Path:
    """The PID file of the instance's hub (``launched``), warm hub (``warm``) or ``proxy``."""
    state_dir = Path(config.jupyterhub.state_dir)
    return state_dir / (f"proxy-{name}.pid" if role == "proxy" else f"hub-{name}.{role}.pid")


def log_path(config: Config, name: str) -> Path:
    return Path(config.jupyterhub.state_dir) / "logs" / f"hub-{name}.log"


def launched_pid(config: Config, name: str) -> int | None:
    """The PID this module launched for ``name``, if that process still runs."""
    return _verified_pid(pid_path(config, name))


def proxy_pid(config: Config, name: str) -> int | None:
    """The PID of the instance's proxy, if it still runs."""
    return _verified_pid(pid_path(config, name, "proxy"))


def warm_pid(config: Config, name: str) -> int | None:
    """The PID of the instance's warm hub, if one waits."""
    return _verified_pid(pid_path(config, name, "warm"))


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
    """Start the instance's hub unless it already runs (the warm one if it waits); its
    proxy first. Return the hub's PID."""
    config.jupyterhub.instance(name)  # unknown names fail here
    running = launched_pid(config, name)
    if running is not None:
        return running
    start_proxy(config, name)
    warm = warm_pid(config, name)
    if warm is not None:
        os.kill(warm, signal.SIGUSR1)
        # the file keeps the time it was written at, which dates the process
        pid_path(config, name, "warm").replace(pid_path(config, name))
        return warm
    return _launch(config, config_path, name, "launched", ["--"])


def warm(config: Config, config_path: Path, name: str) -> int:
    """Make the instance a warm standby: its proxy, and a hub waiting for ``start``."""
    config.jupyterhub.instance(name)
    start_proxy(config, name)
    waiting = warm_pid(config, name)
    if waiting is not None:
        return waiting
    return _launch(config, config_path, name, "warm", ["--wait", "--"])


def _launch(config: Config, config_path: Path, name: str, role: str, args: list[str]) -> int:
    env = {"HUBKEEPER_CONFIG": str(config_path), "HUBKEEPER_HUB_INSTANCE": name}
    argv = [sys.executable, "-m", "hubkeeper.hub.standby", *args, "-f", str(HUB_CONFIG)]
    return _spawn(config, name, role, argv, env, block_usr1=role == "warm")


def start_proxy(config: Config, name: str) -> int:
    """Start the instance's configurable-http-proxy unless it runs; return its PID."""
    running = proxy_pid(config, name)
    if running is not None:
        return running
    argv, env = proxy_command(config, name)
    return _spawn(config, name, "proxy", argv, env)


def _spawn(
    config: Config, name: str, role: str, argv: list[str], env: dict[str, str],
    block_usr1: bool = False,
) -> int:  # fmt: skip
    """Launch ``argv`` in a session of its own, logging to the instance's log, and record it."""
    log_file = log_path(config, name if role != "proxy" else f"{name}-proxy")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            cwd=config.jupyterhub.state_dir,
            start_new_session=True,
            # inherited through exec: a SIGUSR1 sent before the standby waits is kept
            preexec_fn=_block_usr1 if block_usr1 else None,
        )
    write_atomically(pid_path(config, name, role), str(process.pid).encode())
    return process.pid


def _block_usr1() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})


def stop(config: Config, name: str, grace: float = 0.0, timeout: float = 10.0) -> bool:
    """The fence: stop the instance's hub process group (SIGTERM, then SIGKILL after
    ``grace`` s), not its proxy. Returns True once no process of it is left."""
    return _stop_groups([launched_pid(config, name)], grace, timeout)


def retire(config: Config, name: str, grace: float = 0.0, timeout: float = 10.0) -> bool:
    """Stop the instance's proxy and its warm hub, once NGINX no longer sends users there."""
    return _stop_groups([proxy_pid(config, name), warm_pid(config, name)], grace, timeout)


def _stop_groups(pids: Iterable[int | None], grace: float, timeout: float) -> bool:
    groups = [pid for pid in pids if pid]
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
    parser.add_argument("action", choices=["warm", "start", "stop", "retire"])
    parser.add_argument("name", help="hub instance name from [[jupyterhub.instances]]")
    parser.add_argument("--grace", type=float, default=0.0, help="seconds between TERM and KILL")
    args = parser.parse_args(argv)
    config_path = Path(os.environ["HUBKEEPER_CONFIG"])
    config = load(config_path)
    if args.action in ("warm", "start"):
        launch = warm if args.action == "warm" else start
        print(launch(config, config_path, args.name))
        return 0
    halt = stop if args.action == "stop" else retire
    return 0 if halt(config, args.name, grace=args.grace) else 1


if __name__ == "__main__":
    sys.exit(main())
