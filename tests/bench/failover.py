"""Benchmark of hub failover: hubkeeper's watcher against NGINX's own passive failover.

A bounded request loop through NGINX (20 requests/s, in turn: the hub API, alice's server,
bob's server) runs while hub instance a or b, whichever is active, is broken in one of four
ways, ``--runs`` times each, on one stack (a -> b -> a ...; hold time 0 for the benchmark),
with the watcher's default timing and a warm standby:

- ``hub_kill``: SIGKILL of the hub process alone (its proxy lives: a crash, an OOM kill);
- ``hub_hang``: SIGSTOP of the hub process alone (a blocked event loop);
- ``proxy_hang``: SIGSTOP of the instance's proxy;
- ``instance_kill``: SIGKILL of hub and proxy.

Per run: failed requests to the user servers and to the hub API, when the hub API answered
again through the new hub (``api_back_s``) and when the user servers were back for good
(``users_back_s``: after their last failure), the watcher's detection time (fault ->
decision, from its log) and its failover steps (from its ``failover_done`` event).

``--healthy-minutes`` (default 10) first leaves a healthy pair under the same load, with
servers being started and stopped, and counts the watcher's probes of the active hub, the
failed ones, its checks slower than 0.1 s and 0.25 s (the margin below the probe
timeout), and the failovers.

The peer, NGINX passive failover (``max_fails=1`` primary + ``backup`` upstream, no
watcher), needs the standby already running, i.e. two hubs on one database, which
hubkeeper never allows; it is measured that way because it cannot work otherwise, once
per fault kind.

A server starting at the failover (``--spawning-runs``, default 3): a third user's server
is starting (its container frozen: a server slow to answer, such as one whose image is
still loading) when the active hub process is killed, under the same load; it is thawed
once the hub API answers through the new hub. Measured with hubkeeper's
``init_spawners_timeout`` (its default, 1 s) against JupyterHub's default (10 s), each on a stack of
its own: when the hub API was back, the standby's start step, and whether the starting
server was adopted (ready through the new hub, its container kept).

    .venv/bin/python tests/bench/failover.py [--runs 3] [--healthy-minutes 10] [--spawning-runs 3]
    .venv/bin/python tests/bench/failover.py --hosts [--runs 3]   # tests/bench/hosts.py

The last line is JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hubkeeper.config import JupyterHubConfig  # noqa: E402
from hubkeeper.deploy import hubctl  # noqa: E402
from hubkeeper.deploy.stack import Stack, running_stack, wait_for  # noqa: E402
from hubkeeper.hubapi import HubAPIError, HubClient  # noqa: E402
from hubkeeper.nginx import TEMPLATE  # noqa: E402
from tests.bench.hosts import run_hosts  # noqa: E402
from tests.bench.needs import docker_engine  # noqa: E402
from tests.integration.helpers import (  # noqa: E402
    Load,
    Sample,
    series,
    start_and_wait,
    start_frozen,
    user_containers,
)

FAULTS = ("hub_kill", "hub_hang", "proxy_hang", "instance_kill")
# names of this run only: a test on the same engine cannot replace these users' containers
RUN = secrets.token_hex(3)
USERS = (f"alice-{RUN}", f"bob-{RUN}")
AFTER = 8.0  # seconds of load after the hub API is back


def cause(stack: Stack, name: str, fault: str) -> float:
    """Break hub instance ``name``; return when."""
    hub, proxy = hubctl.launched_pid(stack.config, name), hubctl.proxy_pid(stack.config, name)
    assert hub is not None and proxy is not None, f"hub {name} is not fully running"
    at = time.time()
    if fault in ("hub_kill", "instance_kill"):
        os.killpg(hub, signal.SIGKILL)
    if fault == "hub_hang":
        os.kill(hub, signal.SIGSTOP)
    if fault == "proxy_hang":
        os.kill(proxy, signal.SIGSTOP)
    if fault == "instance_kill":
        os.kill(proxy, signal.SIGKILL)
    return at


def watcher_event(stack: Stack, name: str, after: float, **fields: Any) -> dict | None:
    """The first event ``name`` (with ``fields``) the watcher logged after ``after``."""
    for line in (stack.logs / "watcher.log").read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") != name or any(event.get(k) != v for k, v in fields.items()):
            continue
        if datetime.fromisoformat(event["timestamp"]).timestamp() > after:
            return event
    return None


def summarize(samples: list[Sample], fault_at: float, generation: str) -> dict[str, Any]:
    """Failures and recovery times after the fault, split by hub API and user servers."""
    after = [s for s in samples if s.at >= fault_at]
    api = [s for s in after if "/hub/api/" in s.url]
    users = [s for s in after if "/hub/api/" not in s.url]
    api_back = min((s.at for s in api if s.ok and s.generation == generation), default=None)
    user_failures = [s.at for s in users if not s.ok]
    return {
        "user_requests": len(users),
        "user_failed": len(user_failures),
        "api_requests": len(api),
        "api_failed": len([s for s in api if not s.ok]),
        "api_back_s": round(api_back - fault_at, 2) if api_back else None,
        "users_back_s": round(max(user_failures) - fault_at, 2) if user_failures else 0.0,
    }


def under_load(stack: Stack, fault: str, generation: str, active: str) -> dict[str, Any]:
    load = Load(stack, users=USERS)
    load.start()
    time.sleep(3)
    fault_at = cause(stack, active, fault)

    def api_back() -> bool:
        return any(s.ok and s.generation == generation for s in load.samples if s.at > fault_at)

    try:
        wait_for(api_back, 30, "the hub API through the new hub")
        time.sleep(AFTER)
    except TimeoutError:  # the peer does not recover from every fault
        pass
    finally:
        load.stop()
    return {"fault": fault, **summarize(load.samples, fault_at, generation), "at": fault_at}


def run_hubkeeper(workdir: Path, runs: int, healthy_minutes: float) -> dict[str, Any]:
    settings = {"hold_time": 0.0, "max_failovers_per_hour": 100, "startup_grace": 2.0}
    results: list[dict[str, Any]] = []
    with running_stack(workdir, hub_name="bench-fo", watcher=settings) as stack:
        containers = prepare(stack)
        healthy = healthy_run(stack, healthy_minutes) if healthy_minutes > 0 else None
        for run in range(runs):
            for index, fault in enumerate(FAULTS):
                generation = 2 + run * len(FAULTS) + index
                result = one_failover(stack, fault, generation, containers)
                results.append(result)
                print(f"hubkeeper run {run + 1}: {result}", flush=True)
    return {"runs": results, "healthy": healthy}


def one_failover(
    stack: Stack, fault: str, generation: int, containers: dict[str, str]
) -> dict[str, Any]:
    """Break the active instance; measure; wait until it is a warm standby again."""
    active = json.loads(Path(stack.config.watcher.state_file).read_text())["active"]
    result = under_load(stack, fault, str(generation), active)
    fault_at = result.pop("at")
    decided = watcher_event(stack, "decision", fault_at, kind="failover")
    done = watcher_event(stack, "failover_done", fault_at) or {}
    decided_at = datetime.fromisoformat(decided["timestamp"]).timestamp() if decided else None
    result["detection_s"] = round(decided_at - fault_at, 2) if decided_at else None
    result["steps"] = done.get("steps")
    result["handover"] = done.get("handover")
    result["servers_kept"] = kept(stack, containers)
    wait_for(lambda: hubctl.warm_pid(stack.config, active) is not None, 60, "a warm standby")
    return result


# init_spawners_timeout: hubkeeper's default (the config's) against JupyterHub's own
SPAWNING_TIMEOUTS = {
    "hubkeeper": JupyterHubConfig().init_spawners_timeout,
    "jupyterhub_default": 10,
}


def run_spawning(workdir: Path, runs: int) -> dict[str, Any]:
    """Failovers with a server starting, per ``init_spawners_timeout`` (a stack each)."""
    settings = {"hold_time": 0.0, "max_failovers_per_hour": 100, "startup_grace": 2.0}
    figures: dict[str, Any] = {}
    for name, timeout in SPAWNING_TIMEOUTS.items():
        results = []
        with running_stack(
            workdir / name, hub_name=f"bench-sp-{timeout}", watcher=settings,
            overrides={"jupyterhub": {"init_spawners_timeout": timeout}},
        ) as stack:  # fmt: skip
            containers = prepare(stack)
            for run in range(runs):
                result = spawning_failover(stack, 2 + run, f"carol{run}-{RUN}", containers)
                results.append(result)
                print(f"server starting, init_spawners_timeout {timeout}: {result}", flush=True)
        figures[name] = {
            "init_spawners_timeout": timeout,
            "api_back_s": medians(results, "api_back_s")["hub_kill"],
            "standby_start_s": statistics.median(r["steps"]["start"] for r in results),
            "user_failed": medians(results, "user_failed")["hub_kill"],
            "starting_server_adopted": all(r["starting_server_adopted"] for r in results),
            "runs": results,
        }
    return figures


def spawning_failover(
    stack: Stack, generation: int, user: str, containers: dict[str, str]
) -> dict[str, Any]:
    """Kill the active hub process while ``user``'s server is starting (frozen until the
    hub API is back); then wait for the new hub to adopt it, and stop it."""
    client = stack.client()
    client.create_users([user])
    start_frozen(stack, client, user)
    (starting,) = user_containers(stack, user)
    try:
        result = one_failover(stack, "hub_kill", generation, containers)
    finally:
        stack.docker.api.unpause(starting.id)

    def ready() -> bool:
        return bool(client.user(user)["servers"].get("", {}).get("ready"))

    try:
        wait_for(ready, 60, f"{user}'s server through the new hub")
        result["starting_server_adopted"] = [c.id for c in user_containers(stack, user)] == [
            starting.id
        ]
    except TimeoutError:
        result["starting_server_adopted"] = False
    with contextlib.suppress(HubAPIError):
        client.stop_server(user)
    wait_for(lambda: not user_containers(stack, user), 60, f"{user}'s server to stop")
    return result


def healthy_run(stack: Stack, minutes: float) -> dict[str, Any]:
    """A healthy pair under load for ``minutes``, a spawn and a stop every 10 s."""
    port = stack.config.watcher.endpoint.port

    def probes() -> dict[str, float]:
        """Probes run (the first check's count), failed (first minus last check's count),
        and how many of each check took longer than each histogram bucket."""
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        name = "hubkeeper_watcher_probe_duration_seconds"

        def total(suffix: str, **labels: str) -> float:
            return sum(series(text, f"{name}_{suffix}", hub="a", **labels))

        counts = {
            "run": total("count", check="health"),
            "failed": total("count", check="health") - total("count", check="proxy"),
        }
        for bucket in ("0.1", "0.25"):
            counts[f"checks_over_{bucket}s"] = total("count") - total("bucket", le=bucket)
        return counts

    client = stack.client()
    carol = f"carol-{RUN}"
    client.create_users([carol])
    before, started = probes(), time.monotonic()
    load = Load(stack, users=USERS, limit=int(minutes * 60 * 20) + 100)
    load.start()
    spawns = 0
    try:
        while time.monotonic() - started < minutes * 60:
            start_and_stop(client, carol)
            spawns += 1
            time.sleep(max(0.0, 10 - (time.monotonic() - started) % 10))
    finally:
        samples = load.stop()
    state = json.loads(Path(stack.config.watcher.state_file).read_text())
    after = probes()
    result = {
        "minutes": minutes,
        "requests": len(samples),
        "failed": len([s for s in samples if not s.ok]),
        "spawns_and_stops": spawns,
        **{f"probes_{key}": int(after[key] - before[key]) for key in after},
        "failovers": len(state["failover_times"]),
    }
    print(f"healthy: {result}", flush=True)
    return result


def start_and_stop(client: HubClient, user: str) -> None:
    """Start the user's server, wait until it is ready, stop it and wait until it is gone;
    an API call that the client retried after a timeout may find its work done."""

    def server() -> dict:
        return client.user(user)["servers"].get("", {})

    with contextlib.suppress(HubAPIError):
        client.start_server(user)
    wait_for(lambda: bool(server().get("ready")), 60, f"{user}'s server")
    with contextlib.suppress(HubAPIError):
        client.stop_server(user)
    wait_for(lambda: not server(), 60, f"{user}'s server to stop")


def run_peer(workdir: Path) -> list[dict[str, Any]]:
    """NGINX passive failover with a hot standby, once per fault (a new stack each)."""
    results = []
    for fault in FAULTS:
        with running_stack(
            workdir / fault, hub_name="bench-peer", watcher={"startup_grace": 3600.0}
        ) as stack:
            stack.watcher_process.kill()  # on purpose: no watcher for the peer
            stack.start_hub("b")
            passive(stack, workdir / fault / "passive.conf.template")
            containers = prepare(stack)
            result = under_load(stack, fault, "1", "a")
            result.pop("at")
            result["servers_kept"] = kept(stack, containers)
            result["hubs_on_one_database"] = 2
            results.append(result)
            print(f"peer (NGINX passive): {result}", flush=True)
    return results


def passive(stack: Stack, template: Path) -> None:
    """NGINX with hub b as the backup of every upstream."""
    standby = stack.config.jupyterhub.instance("b")
    template.write_text(
        TEMPLATE.read_text()
        .replace(
            "server {{host}}:{{proxy_port}};",
            "server {{host}}:{{proxy_port}} max_fails=1 fail_timeout=10s; "
            f"server {standby.host}:{standby.proxy_port} backup;",
        )
        .replace(
            "server {{host}}:{{hub_port}};",
            "server {{host}}:{{hub_port}} max_fails=1 fail_timeout=10s; "
            f"server {standby.host}:{standby.hub_port} backup;",
        )
    )
    stack.nginx.config = dataclasses.replace(stack.nginx.config, template=str(template))
    stack.nginx.switch(stack.config.jupyterhub.instance("a"), 1, confirm_timeout=5)


def prepare(stack: Stack) -> dict[str, str]:
    client = stack.client()
    client.create_users(list(USERS))
    for user in USERS:
        start_and_wait(client, user)
    return {user: user_containers(stack, user)[0].id for user in USERS}


def kept(stack: Stack, containers: dict[str, str]) -> bool:
    return all(
        [(c.id, c.status) for c in user_containers(stack, user)] == [(cid, "running")]
        for user, cid in containers.items()
    )


def medians(runs: list[dict[str, Any]], key: str) -> dict[str, dict[str, float | None]]:
    """Median and worst of ``key`` per fault kind."""
    figures: dict[str, dict[str, float | None]] = {}
    for fault in FAULTS:
        values = [r[key] for r in runs if r["fault"] == fault and r.get(key) is not None]
        figures[fault] = {
            "median": statistics.median(values) if values else None,
            "worst": max(values) if values else None,
        }
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="failovers per fault kind (1-5)")
    parser.add_argument(
        "--healthy-minutes", type=float, default=10.0, help="healthy run first (0: none, <= 60)"
    )
    parser.add_argument("--no-peer", action="store_true", help="skip NGINX passive failover")
    parser.add_argument(
        "--spawning-runs", type=int, default=3,
        help="failovers with a server starting, per init_spawners_timeout (0: none, <= 5)",
    )  # fmt: skip
    parser.add_argument(
        "--hosts", action="store_true", help="instead, the control plane on several hosts (root)"
    )
    args = parser.parse_args()
    runs, healthy = max(1, min(args.runs, 5)), max(0.0, min(args.healthy_minutes, 60.0))
    if args.hosts:
        with docker_engine(), tempfile.TemporaryDirectory(prefix="hubkeeper-bench-hosts-") as tmp:
            hosts = run_hosts(Path(tmp), runs)
        print(json.dumps({"benchmark": "failover_hosts", "rate_per_s": 20.0, **hosts}))
        return 0
    with docker_engine(), tempfile.TemporaryDirectory(prefix="hubkeeper-bench-failover-") as tmp:
        ours = run_hubkeeper(Path(tmp) / "hubkeeper", runs, healthy)
        peer = None if args.no_peer else run_peer(Path(tmp) / "peer")
        spawning_runs = max(0, min(args.spawning_runs, 5))
        spawning = run_spawning(Path(tmp) / "spawning", spawning_runs) if spawning_runs else None
    step_names = sorted({name for r in ours["runs"] if r["steps"] for name in r["steps"]})
    steps = {
        name: statistics.median(r["steps"][name] for r in ours["runs"] if r["steps"])
        for name in step_names
    }
    figures = {
        "benchmark": "failover",
        "rate_per_s": 20.0,
        "hubkeeper": {
            "api_back_s": medians(ours["runs"], "api_back_s"),
            "users_back_s": medians(ours["runs"], "users_back_s"),
            "user_failed": medians(ours["runs"], "user_failed"),
            "api_failed": medians(ours["runs"], "api_failed"),
            "detection_s": medians(ours["runs"], "detection_s"),
            "step_medians_s": steps,
            "api_back_median_all_s": statistics.median(
                r["api_back_s"] for r in ours["runs"] if r["api_back_s"] is not None
            ),
            "servers_kept": all(r["servers_kept"] for r in ours["runs"]),
            "healthy": ours["healthy"],
            "runs": ours["runs"],
        },
        "nginx_passive_hot_standby": peer,
        "server_starting_at_failover": spawning,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
