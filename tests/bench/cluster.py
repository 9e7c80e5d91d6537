"""Cluster mode of the container metrics benchmark: a real 3-node Swarm in namespaces.

The stack ``hubkeeper up --nodes 3`` runs (hub on the swarm, the exporter that keeps the
cluster's books, one exporter per node in its namespace), plus ``--per-node`` tiny
services on every node (``sleep`` in the base image, host network), labelled as the hub's
servers although the hub has none of them: orphans, every one, which the books and the
culler must list. Measured, each the median of 5: each node exporter's full ``/metrics``
scrape against ``docker stats --no-stream`` on that node's engine (the peer), the cluster
PRTG sensor (the books plus every node's exporter read), and the culler's cycle over the
whole cluster (``cull --once`` with busy protection: services from the manager, CPU from
each node's exporter; its own ``cull_cycle`` duration). The last line is the figures as
JSON.

    .venv/bin/python tests/bench/container_metrics.py --cluster 100
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from docker.types import EndpointSpec, RestartPolicy

from hubkeeper import prtg
from hubkeeper.deploy.stack import Stack, running_stack, to_toml, wait_for
from hubkeeper.deploy.swarm import Node, Swarm
from hubkeeper.hub.images import BASE_IMAGE

REPEATS = 5
ROOT = Path(__file__).resolve().parents[2]


def median_seconds(call: Callable[[], Any]) -> tuple[float, Any]:
    """The median duration of REPEATS calls, and the last call's result."""
    durations, result = [], None
    for _ in range(REPEATS):
        started = time.perf_counter()
        result = call()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations), result


def get(url: str) -> str:
    response = requests.get(url, timeout=60)
    response.raise_for_status()
    return response.text


def seen(text: str) -> int:
    for line in text.splitlines():
        if line.startswith("hubkeeper_containers_seen"):
            return int(float(line.rpartition(" ")[2]))
    return -1


class ClusterBench:
    def __init__(self, stack: Stack, swarm: Swarm, per_node: int) -> None:
        self.stack, self.swarm, self.per_node = stack, swarm, per_node
        self.port = stack.config.containers.endpoint.port

    def node_url(self, node: Node, path: str) -> str:
        return f"http://{self.swarm.reachable(node.address)}:{self.port}{path}"

    def start_services(self) -> None:
        labels, hub = self.stack.config.labels, self.stack.config.jupyterhub.name
        manager = self.swarm.manager.client(timeout=120)

        def create(spec: tuple[Node, int]) -> None:
            node, index = spec
            tags = {labels.user: f"bench-{node.name}-{index:03d}", labels.hub: hub}
            manager.services.create(
                BASE_IMAGE, ["sleep", "3600"], name=f"bench-{node.name}-{index:03d}",
                networks=["host"], endpoint_spec=EndpointSpec(mode="dnsrr"),
                constraints=[f"node.hostname=={node.name}"], labels=tags,
                container_labels=tags, restart_policy=RestartPolicy(condition="none"),
            )  # fmt: skip

        specs = [(node, index) for node in self.swarm.nodes for index in range(self.per_node)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, specs))
        for node in self.swarm.nodes:
            wait_for(lambda node=node: seen(get(self.node_url(node, "/metrics"))) == self.per_node,
                     600, f"{self.per_node} containers on {node.name}")  # fmt: skip

    def per_node_figures(self, node: Node) -> dict[str, Any]:
        scrape, _ = median_seconds(lambda: get(self.node_url(node, "/metrics")))
        started = time.perf_counter()
        subprocess.run(["docker", "-H", node.url, "stats", "--no-stream"],
                       capture_output=True, check=True, timeout=600)  # fmt: skip
        docker_stats = time.perf_counter() - started
        return {
            "node": node.name,
            "scrape_ms_median": round(scrape * 1000, 1),
            "docker_stats_no_stream_ms": round(docker_stats * 1000, 1),
            "speedup_vs_docker_stats": round(docker_stats / scrape, 1),
        }

    def cluster_sensor(self) -> tuple[float, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/prtg/cluster"
        seconds, body = median_seconds(lambda: get(url))
        sensor = json.loads(body)
        problems = prtg.check(sensor)
        if problems:
            raise AssertionError(f"the cluster sensor is not valid: {problems}")
        return seconds, sensor

    def culler_cycle(self) -> tuple[float, int]:
        """The culler's own cycle duration, median of REPEATS ``--once`` runs, and the
        orphans its last run reported."""
        data = tomllib.loads(self.stack.config_path.read_text())
        data["culler"] = {"hub_token_file": "secrets/services/hubkeeper-culler.token",
                          "state_file": str(self.stack.workdir / "bench-culler.json"),
                          "busy_cpu_percent": 10.0, "busy_min_span": 1.0,
                          "orphans": "report", "orphan_grace": 0.0}  # fmt: skip
        path = self.stack.workdir / "bench-culler.toml"
        path.write_text(to_toml(data))
        durations, orphans = [], 0
        for _ in range(REPEATS):
            done = subprocess.run(
                [sys.executable, "-m", "hubkeeper.cli", "cull", "--once", "--config", str(path)],
                capture_output=True, text=True, timeout=300, cwd=ROOT, check=True,
            )  # fmt: skip
            events = [json.loads(line) for line in done.stdout.splitlines() if line[:1] == "{"]
            (cycle,) = [e for e in events if e.get("event") == "cull_cycle"]
            durations.append(cycle["duration"])
            orphans = sum(1 for e in events if e.get("kind") == "orphan")
        return statistics.median(durations), orphans

    def run(self) -> dict[str, Any]:
        self.start_services()
        nodes = [self.per_node_figures(node) for node in self.swarm.nodes]
        wait_for(
            lambda: f'hubkeeper_containers_orphans {float(len(nodes) * self.per_node)}'
            in get(f"http://127.0.0.1:{self.port}/metrics"),
            120, "the books to list every service as an orphan",
        )  # fmt: skip
        sensor_seconds, sensor = self.cluster_sensor()
        cycle, orphans = self.culler_cycle()
        return {
            "benchmark": "container_metrics_cluster",
            "nodes": len(nodes),
            "containers_per_node": self.per_node,
            "per_node": nodes,
            "cluster_sensor_ms_median": round(sensor_seconds * 1000, 1),
            "cluster_sensor_text": sensor["prtg"]["text"][:200],
            "culler_cycle_s_median": round(cycle, 2),
            "culler_orphans_reported": orphans,
            "targets": {
                "every_node_faster_than_docker_stats": all(
                    n["speedup_vs_docker_stats"] > 1 for n in nodes
                ),
                "culler_saw_every_service": orphans == len(nodes) * self.per_node,
            },
        }


def cluster_benchmark(per_node: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="hubkeeper-bench-cluster-"))
    overrides = {"containers": {"cache_seconds": 0.0, "reconcile_seconds": 2.0}}
    with (
        Swarm(workdir / "swarm", 3) as swarm,
        running_stack(workdir / "stack", hub_name="bench", overrides=overrides,
                      daemons=("export-containers",), swarm=swarm) as stack,
    ):  # fmt: skip
        return ClusterBench(stack, swarm, per_node).run()
