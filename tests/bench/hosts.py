"""The multi-host part of ``tests/bench/failover.py --hosts``: the control plane on hosts in
network namespaces (deploy/controlplane.py, user servers on a 3-node swarm), each kind of
host lost ``runs`` times under the same request loop through the floating address:

- ``hub_host``: the active hub's host (power off, then its cable); the standby on the
  other host takes over;
- ``leader_watcher_host``: the leading watcher's host; the other watcher takes the lease
  (nothing is failed over: the service should not notice);
- ``nginx_host``: the NGINX host holding the floating address; keepalived moves it.

After each loss the host comes back as after a reboot (its hub warm, its NGINX with the
config it had, brought to the live generation by the leader), so the next run finds the
same plane. Per run: failed requests to the user servers and the hub API, when the
service answered again for good (``users_back_s``, ``api_back_s``), and for the watcher
host the seconds until the other watcher led, for the NGINX host until the address moved.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import docker

from hubkeeper.config import DockerConfig
from hubkeeper.deploy.controlplane import HUBS, NGINX_HOSTS, ControlPlane, host
from hubkeeper.deploy.netns import FLOATING_ADDRESS
from hubkeeper.deploy.stack import wait_for
from hubkeeper.deploy.swarm import Swarm
from hubkeeper.hub.images import BASE_IMAGE, ensure_images
from tests.integration.helpers import Load, start_and_wait

HOST_FAULTS = ("hub_host", "leader_watcher_host", "nginx_host")
USERS = ("alice", "bob")
SETTLE = 6.0  # seconds of load after the service is back


def back(load: Load, since: float, hub_api: bool) -> float | None:
    """Seconds from ``since`` to the last failed request of the kind (0: none failed)."""
    failed = load.failed(hub_api, since)
    return round(max(s.at for s in failed) - since, 2) if failed else 0.0


def one_loss(plane: ControlPlane, fault: str) -> dict[str, Any]:
    load = Load(plane, users=USERS)
    load.start()
    time.sleep(2)
    state = plane.saved_state()
    generation = state["generation"]
    victim = {
        "hub_host": HUBS[state["active"]],
        "leader_watcher_host": plane.leader(),
        "nginx_host": plane.floating_holder(),
    }[fault]
    assert victim is not None, f"no host to lose for {fault}"
    at = time.time()
    plane.kill_host(victim)
    result: dict[str, Any] = {"fault": fault, "host": victim}
    try:
        if fault == "hub_host":
            wait_for(lambda: plane.saved_state()["generation"] > generation, 60, "the failover")
        elif fault == "leader_watcher_host":
            wait_for(lambda: plane.leader() not in (None, victim), 30, "the other watcher")
            result["takeover_s"] = round(time.time() - at, 2)
        else:
            (other,) = set(NGINX_HOSTS) - {victim}
            moved = lambda: plane.net.holds(host(other), FLOATING_ADDRESS)  # noqa: E731
            wait_for(moved, 30, "the floating address to move", interval=0.05)
            result["address_moved_s"] = round(time.time() - at, 2)
        time.sleep(SETTLE)
    finally:
        load.stop()
    after = [s for s in load.samples if s.at >= at]
    result.update(
        user_failed=len([s for s in after if not s.ok and "/hub/api/" not in s.url]),
        api_failed=len([s for s in after if not s.ok and "/hub/api/" in s.url]),
        requests=len(after),
        users_back_s=back(load, at, hub_api=False),
        api_back_s=back(load, at, hub_api=True),
    )
    plane.revive(victim)
    if fault == "nginx_host":  # the leader brings it to the live generation
        live = plane.saved_state()
        expected = {"nginx": [live["active"], live["generation"]]}
        aligned = lambda: plane.agent_get(victim, "/v1/nginx")["nginx"] == expected["nginx"]  # noqa: E731
        wait_for(aligned, 30, f"{victim} back at the live generation")
    return result


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and worst of each figure, per kind of host lost."""
    figures = ("users_back_s", "api_back_s", "user_failed", "api_failed", "takeover_s",
               "address_moved_s")  # fmt: skip
    out: dict[str, Any] = {}
    for fault in HOST_FAULTS:
        mine = [run for run in runs if run["fault"] == fault]
        out[fault] = {
            key: {"median": statistics.median(values), "worst": max(values)}
            for key in figures
            if (values := [run[key] for run in mine if run.get(key) is not None])
        }
    return out


def run_hosts(workdir: Path, runs: int) -> dict[str, Any]:
    root_engine = docker.DockerClient(base_url=DockerConfig().url, timeout=300)
    images = ensure_images(root_engine, print)
    results: list[dict[str, Any]] = []
    with Swarm(workdir / "swarm", 3) as swarm:
        swarm.load_images([BASE_IMAGE, *images])
        settings = {"hold_time": 0.0, "max_failovers_per_hour": 100, "startup_grace": 2.0}
        plane = ControlPlane(workdir / "plane", hub_name="bench-hosts", swarm=swarm,
                             watcher=settings)  # fmt: skip
        try:
            plane.up()
            plane.net.reachable(FLOATING_ADDRESS)
            client = plane.client()
            client.create_users(list(USERS))
            for user in USERS:
                start_and_wait(client, user)
            for run in range(runs):
                for fault in HOST_FAULTS:
                    result = one_loss(plane, fault)
                    results.append(result)
                    print(f"hosts run {run + 1}: {result}", flush=True)
        finally:
            plane.down()
    return {"runs": results, "summary": summary(results)}
