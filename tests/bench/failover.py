"""Benchmark of hub failover: hubkeeper's watcher against NGINX's own passive failover.

A bounded request loop (20 requests/s: the hub API and alice's server, through NGINX) runs
while the active hub and its proxy are killed with SIGKILL at a fixed time.

- hubkeeper: cold standby, watcher with its default timing (1 s interval, fall 3, rise 2);
  ``--runs`` kills in a row on one stack (a -> b -> a ...; hold time 0 for the benchmark).
- peer: NGINX passive failover (``max_fails=1`` primary + ``backup`` upstream), no watcher.
  Passive failover needs the standby already running, i.e. two hubs on one database, which
  hubkeeper never allows; the peer is measured that way because it cannot work otherwise.

Printed per run: detection time (kill -> watcher decision), time until requests succeed
again, requests failed in total and after the switch, whether alice's container survived.
The last line is JSON.

    .venv/bin/python tests/bench/failover.py [--runs 3] [--after 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hubkeeper.deploy import hubctl  # noqa: E402
from hubkeeper.deploy.stack import Stack, running_stack  # noqa: E402
from hubkeeper.nginx import GENERATION_HEADER, TEMPLATE  # noqa: E402
from tests.bench.needs import docker_engine  # noqa: E402
from tests.integration.helpers import start_and_wait, user_containers  # noqa: E402

RATE = 20.0
BEFORE_KILL = 5.0


@dataclass
class Sample:
    at: float
    ok: bool
    generation: str | None


@dataclass(eq=False)
class Load(threading.Thread):
    """Alternating GETs of the hub API and alice's server at RATE per second."""

    stack: Stack
    samples: list[Sample] = field(default_factory=list)
    halt: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        super().__init__(daemon=True)

    def run(self) -> None:
        token = self.stack.client().config.token.reveal()
        headers = {"Authorization": f"token {token}"}
        urls = [
            f"{self.stack.public_url}/hub/api/",
            f"{self.stack.public_url}/user/alice/api/status",
        ]
        session = requests.Session()
        next_at, index = time.monotonic(), 0
        while not self.halt.is_set():
            started = time.time()
            try:
                response = session.get(urls[index % 2], headers=headers, timeout=2)
                ok = response.status_code == 200
                generation = response.headers.get(GENERATION_HEADER)
            except requests.RequestException:
                ok, generation = False, None
            self.samples.append(Sample(started, ok, generation))
            index += 1
            next_at += 1 / RATE
            time.sleep(max(0.0, next_at - time.monotonic()))


def kill_active(stack: Stack, name: str) -> float:
    proxy = hubctl.proxy_pid(stack.config, name)
    hub = hubctl.launched_pid(stack.config, name)
    assert hub is not None and proxy is not None
    killed_at = time.time()
    os.killpg(hub, signal.SIGKILL)
    os.kill(proxy, signal.SIGKILL)
    return killed_at


def decision_time(stack: Stack, after: float) -> float | None:
    """When the watcher decided to fail over, from its JSON log."""
    for line in (stack.logs / "watcher.log").read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "decision" and event.get("kind") == "failover":
            at = datetime.fromisoformat(event["timestamp"]).timestamp()
            if at > after:
                return at
    return None


def summarize(samples: list[Sample], killed_at: float, new_generation: str | None) -> dict:
    after = [s for s in samples if s.at >= killed_at]
    failed = [s for s in after if not s.ok]
    last_failure = max((s.at for s in failed), default=killed_at)
    switched = [s.at for s in after if s.ok and s.generation == new_generation]
    switch_at = min(switched) if switched else None
    return {
        "requests_after_kill": len(after),
        "failed": len(failed),
        "failed_after_switch": len([s for s in failed if switch_at and s.at > switch_at]),
        "back_after_s": round(last_failure - killed_at, 2) if failed else 0.0,
    }


def run_hubkeeper(workdir: Path, runs: int, after: float) -> list[dict]:
    settings = {"hold_time": 0.0, "max_failovers_per_hour": 100, "startup_grace": 2.0}
    results = []
    with running_stack(workdir, hub_name="bench-fo", watcher=settings) as stack:
        container = prepare_alice(stack)
        for run in range(runs):
            active = json.loads(Path(stack.config.watcher.state_file).read_text())["active"]
            load = Load(stack)
            load.start()
            time.sleep(BEFORE_KILL)
            killed_at = kill_active(stack, active)
            time.sleep(after)
            load.halt.set()
            load.join(5)
            decided = decision_time(stack, killed_at)
            result = summarize(load.samples, killed_at, str(run + 2))
            result["detection_s"] = round(decided - killed_at, 2) if decided else None
            result["user_server_survived"] = alive(stack, container)
            results.append(result)
            print(f"hubkeeper run {run + 1}: {result}", flush=True)
    return results


def run_peer(workdir: Path, after: float) -> dict:
    """NGINX passive failover with a hot standby (the watcher stopped at once)."""
    with running_stack(workdir, hub_name="bench-peer", watcher={"startup_grace": 3600.0}) as stack:
        os.killpg(stack.watcher_process.pid, signal.SIGKILL)
        stack.start_hub("b")
        standby = stack.config.jupyterhub.instance("b")
        template = workdir / "passive.conf.template"
        template.write_text(
            TEMPLATE.read_text()
            .replace(
                "server 127.0.0.1:{{proxy_port}};",
                "server 127.0.0.1:{{proxy_port}} max_fails=1 fail_timeout=10s; "
                f"server 127.0.0.1:{standby.proxy_port} backup;",
            )
            .replace(
                "server 127.0.0.1:{{hub_port}};",
                "server 127.0.0.1:{{hub_port}} max_fails=1 fail_timeout=10s; "
                f"server 127.0.0.1:{standby.hub_port} backup;",
            )
        )
        stack.nginx.config = dataclasses.replace(stack.nginx.config, template=str(template))
        stack.nginx.switch(stack.config.jupyterhub.instance("a"), 1, confirm_timeout=5)
        container = prepare_alice(stack)
        load = Load(stack)
        load.start()
        time.sleep(BEFORE_KILL)
        killed_at = kill_active(stack, "a")
        time.sleep(after)
        load.halt.set()
        load.join(5)
        result = summarize(load.samples, killed_at, "1")
        result["detection_s"] = None  # per request: NGINX retries the backup on each error
        result["user_server_survived"] = alive(stack, container)
        result["hubs_on_one_database"] = 2
        print(f"peer (NGINX passive): {result}", flush=True)
        return result


def prepare_alice(stack: Stack) -> str:
    client = stack.client()
    client.create_users(["alice"])
    start_and_wait(client, "alice")
    (container,) = user_containers(stack, "alice")
    return container.id


def alive(stack: Stack, container_id: str) -> bool:
    containers = user_containers(stack, "alice")
    return [c.id for c in containers] == [container_id] and containers[0].status == "running"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="hubkeeper failovers (1-5)")
    parser.add_argument("--after", type=float, default=20.0, help="seconds of load after a kill")
    args = parser.parse_args()
    runs, after = max(1, min(args.runs, 5)), max(5.0, min(args.after, 60.0))
    # one engine for both stacks (each would otherwise start and stop its own)
    with docker_engine(), tempfile.TemporaryDirectory(prefix="hubkeeper-bench-failover-") as tmp:
        ours = run_hubkeeper(Path(tmp) / "hubkeeper", runs, after)
        peer = run_peer(Path(tmp) / "peer", after)
    detections = [r["detection_s"] for r in ours if r["detection_s"] is not None]
    figures = {
        "benchmark": "failover",
        "rate_per_s": RATE,
        "hubkeeper": {
            "runs": ours,
            "detection_median_s": statistics.median(detections) if detections else None,
            "back_median_s": statistics.median(r["back_after_s"] for r in ours),
            "failed_after_switch_total": sum(r["failed_after_switch"] for r in ours),
            "user_servers_survived": all(r["user_server_survived"] for r in ours),
        },
        "nginx_passive_hot_standby": peer,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
