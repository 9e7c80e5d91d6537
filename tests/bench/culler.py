"""Benchmark: one cull cycle of ``hubkeeper cull`` and of jupyterhub-idle-culler, same hub.

A real hub (DockerSpawner, NGINX) with 2,000 users, of whom ``--servers`` run a real
server, ``--active`` of them kept active through NGINX and the rest idle past the
timeout. The servers' containers take ``--stop-delay`` seconds to stop (a wrapper holds
SIGTERM back): slow stops. Both cullers get the same options (idle timeout, concurrency,
page size). Steps:

1. ``hubkeeper cull --once --dry-run`` on that state: the servers it would cull;
2. one cycle of jupyterhub-idle-culler (PyPI), for real: cycle time, culled servers;
3. the culled servers started again, idle again; ``hubkeeper cull --once`` for real.

Hub API requests are counted from NGINX's access log (lines under ``/hub/api/`` written
during each run, but the servers' activity reports), the same way for both.
DockerSpawner runs every Docker call of the hub on one thread, so the hub stops servers
one at a time whatever the culler does; a culler that asks concurrently gets its answers
(202, "still stopping") after the hub's ``slow_stop_timeout`` (10 s), or none in time
when the hub's queue is long, instead of waiting for each stop in turn. Everything it
started is stopped at the end. The last line printed is the figures as JSON.

    .venv/bin/python tests/bench/culler.py [--servers 30] [--active 5] [--stop-delay 6]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from jupyterhub_idle_culler import cull_idle  # noqa: E402

from hubkeeper.deploy.stack import Stack, running_stack, to_toml, wait_for  # noqa: E402
from hubkeeper.hub.images import SINGLEUSER_IMAGE  # noqa: E402
from hubkeeper.hubapi import HubAPIError, HubClient  # noqa: E402

USERS = 2000
TIMEOUT = 30  # idle timeout, seconds (whole seconds: the idle culler's option is an int)
SLOW_STOP = """#!/bin/sh
# Run the server; on SIGTERM wait STOP_DELAY seconds before passing it on.
"$@" &
child=$!
trap 'sleep "$STOP_DELAY"; kill -TERM "$child"' TERM
wait "$child"
wait "$child"
"""
DOCKERFILE = f"""FROM {SINGLEUSER_IMAGE}
COPY slow-stop /usr/local/bin/slow-stop
ENV STOP_DELAY={{delay}}
ENTRYPOINT ["/bin/sh", "/usr/local/bin/slow-stop"]
CMD ["jupyterhub-singleuser"]
"""
started = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)


def slow_image_tag(delay: float) -> str:
    return f"hubkeeper/bench-slow-stop:{delay:g}s"


def build_slow_image(stack: Stack, delay: float) -> str:
    """The single-user image whose containers take ``delay`` seconds to stop."""
    tag = slow_image_tag(delay)
    with tempfile.TemporaryDirectory(prefix="hubkeeper-bench-") as folder:
        context = Path(folder)
        (context / "slow-stop").write_text(SLOW_STOP)
        (context / "Dockerfile").write_text(DOCKERFILE.format(delay=delay))
        stack.docker.images.build(path=str(context), tag=tag, rm=True, network_mode="host")
    return tag


def operator(stack: Stack) -> HubClient:
    return HubClient(dataclasses.replace(stack.client().config, timeout=120.0))


def spawn(stack: Stack, users: list[str], concurrency: int = 8) -> float:
    client = operator(stack)

    def start(user: str) -> None:
        with contextlib.suppress(HubAPIError):  # a 400 "pending" after a retried request
            client.start_server(user)

    clock = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(start, users))
    wait_for(lambda: ready_count(client, users) == len(users), 300, f"{len(users)} servers")
    return time.perf_counter() - clock


def ready_count(client: HubClient, users: list[str]) -> int:
    wanted = set(users)
    return sum(
        1
        for user in client.paginate("/users", {"state": "ready"})
        if user["name"] in wanted and (user["servers"].get("") or {}).get("ready")
    )


def running(client: HubClient) -> set[str]:
    return {user["name"] for user in client.paginate("/users", {"state": "active"})}


class Pinger(threading.Thread):
    """Keeps servers active: a request through NGINX to each, every second."""

    def __init__(self, stack: Stack, users: list[str]) -> None:
        super().__init__(daemon=True)
        self.urls = [f"{stack.public_url}/user/{user}/api/status" for user in users]
        self.headers = {"Authorization": f"token {stack.client().config.token.reveal()}"}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(1.0):
            for url in self.urls:
                with contextlib.suppress(requests.RequestException):
                    requests.get(url, headers=self.headers, timeout=5)


class AccessLog:
    """Counts hub API requests NGINX logged since :meth:`mark`, but the user servers' own
    activity reports (aiohttp; they reach the hub through NGINX's internal listener)."""

    def __init__(self, stack: Stack) -> None:
        self.path = Path(stack.config.nginx.prefix) / "logs" / "access.log"
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def api_requests(self) -> int:
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            return sum(1 for line in handle if b" /hub/api/" in line and b"aiohttp" not in line)


def hubkeeper(stack: Stack, name: str, options: dict[str, Any], *args: str) -> dict[str, Any]:
    data = tomllib.loads(stack.config_path.read_text())
    data["culler"] = {
        "hub_token_file": "secrets/services/hubkeeper-culler.token",
        "state_file": str(stack.workdir / f"{name}.json"),
        "timeout": float(options["timeout"]),
        "concurrency": options["concurrency"],
        "busy_min_span": 2.0,
        "orphans": "off",
    }
    path = stack.workdir / f"{name}.toml"
    path.write_text(to_toml(data))
    command = [sys.executable, "-m", "hubkeeper.cli", "cull", "--once", "--config", str(path)]
    clock = time.perf_counter()
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - clock
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    (cycle,) = [e for e in events if e["event"] == "cull_cycle"]
    decisions = [e for e in events if e["event"] == "cull_decision"]
    results = Counter(e["result"] for e in decisions if e["action"] == "stop")
    kept = Counter(e["reason"] for e in decisions if e["action"] == "keep")
    return {
        "exit_code": done.returncode,
        "cycle_seconds": round(cycle["duration"], 2),
        "process_seconds": round(wall, 2),
        "culled": sorted(cycle["culled"]),
        "own_request_count": cycle["api_requests"],
        "stop_results": dict(results),
        "kept": dict(kept),
    }


def idle_culler(stack: Stack, options: dict[str, Any]) -> dict[str, Any]:
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("bench-idle-culler")
    logger.setLevel(logging.INFO)
    logger.addHandler(Collect())
    token_file = Path(stack.config.jupyterhub.services_token_dir or "") / "hubkeeper-culler.token"
    clock = time.perf_counter()
    asyncio.run(
        cull_idle(
            url=f"{stack.public_url}/hub/api",
            api_token=token_file.read_text().strip(),
            inactive_limit=options["timeout"],
            logger=logger,
            concurrency=options["concurrency"],
            api_page_size=options["page_size"],
        )
    )
    cycle = time.perf_counter() - clock
    culled = sorted(
        m.removeprefix("Culling server ").split(" ")[0]
        for m in messages
        if m.startswith("Culling server ")
    )
    slow = sum(1 for m in messages if m.endswith("is slow to stop"))
    return {"cycle_seconds": round(cycle, 2), "culled": culled, "slow_to_stop": slow}


def run(args: argparse.Namespace) -> dict[str, Any]:
    names = [f"u{i:04d}" for i in range(USERS)]
    busy_users = names[: args.servers]
    idle_users, active_users = busy_users[args.active :], busy_users[: args.active]
    options = {"timeout": TIMEOUT, "concurrency": args.concurrency, "page_size": 200}
    image = slow_image_tag(args.stop_delay)
    hub = {
        "last_activity_interval": 2,
        "spawn_timeout": 120.0,
        "image": image,  # built below, before the first spawn
        "allowed_images": [image],
    }
    with tempfile.TemporaryDirectory(prefix="hubkeeper-bench-culler-") as folder:
        stack_context = running_stack(
            Path(folder),
            hub_name=f"bench-{secrets.token_hex(3)}",
            overrides={"jupyterhub": hub},
            progress=say,
        )
        with stack_context as stack:
            build_slow_image(stack, args.stop_delay)
            say(f"built {image}")
            client = operator(stack)
            clock = time.perf_counter()
            for i in range(0, USERS, 500):
                client.create_users(names[i : i + 500])
            say(f"created {USERS} users in {time.perf_counter() - clock:.1f}s")
            spawn_seconds = spawn(stack, busy_users)
            say(f"started {len(busy_users)} servers in {spawn_seconds:.1f}s")
            pinger = Pinger(stack, active_users)
            pinger.start()
            log = AccessLog(stack)
            try:
                time.sleep(TIMEOUT + 5)
                log.mark()
                dry = hubkeeper(stack, "dry", options, "--dry-run")
                say(f"hubkeeper dry run: {len(dry['culled'])} to cull")

                log.mark()
                theirs = idle_culler(stack, options)
                theirs["hub_api_requests"] = log.api_requests()
                say(f"jupyterhub-idle-culler: {theirs['cycle_seconds']}s")
                wait_for(lambda: running(client) == set(active_users), 600, "the stops")

                respawn = spawn(stack, idle_users)
                say(f"started {len(idle_users)} servers again in {respawn:.1f}s")
                time.sleep(TIMEOUT + 5)
                log.mark()
                ours = hubkeeper(stack, "real", options)
                ours["hub_api_requests"] = log.api_requests()
                say(f"hubkeeper: {ours['cycle_seconds']}s (the hub goes on stopping)")
            finally:
                pinger.halt.set()
    expected = sorted(idle_users)
    return {
        "users": USERS,
        "servers": args.servers,
        "idle": len(idle_users),
        "stop_delay_seconds": args.stop_delay,
        "concurrency": args.concurrency,
        "timeout_seconds": TIMEOUT,
        "spawn_seconds": round(spawn_seconds, 1),
        "hubkeeper_dry_run": dry,
        "jupyterhub_idle_culler": theirs,
        "hubkeeper": ours,
        "same_decisions": dry["culled"] == theirs["culled"] == ours["culled"] == expected,
        "speedup": round(theirs["cycle_seconds"] / ours["cycle_seconds"], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=30, help="running servers (30-50)")
    parser.add_argument("--active", type=int, default=5, help="of which kept active")
    parser.add_argument("--stop-delay", type=float, default=6.0, help="seconds per stop")
    parser.add_argument("--concurrency", type=int, default=10, help="both cullers'")
    # Ctrl-C (or SIGINT to a background run, which would ignore it) tears the stack down
    signal.signal(signal.SIGINT, signal.default_int_handler)
    figures = run(parser.parse_args())
    print(json.dumps(figures), flush=True)
    return 0 if figures["same_decisions"] else 1


if __name__ == "__main__":
    sys.exit(main())
