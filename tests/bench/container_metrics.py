"""Benchmark of ``hubkeeper export-containers`` against ``docker stats`` and the stats API.

Starts 50, 100 and 200 tiny labelled containers (``sleep`` in the base image, host
networking; one of them a CPU burner limited to half a CPU), and at each size times a full
``/metrics`` scrape and the PRTG overview of a real exporter process (snapshot cache off),
``docker stats --no-stream`` and concurrent one-shot stats API calls; it also compares the
exporter's memory figures with ``docker stats`` and its CPU counters with the stats API
(the burner's CPU percentage from both is printed too: under a busy machine the two
windows differ), and prints the exporter's RSS.
It starts the Docker engine when none answers (and stops it at the end) and builds the base
image when missing, as the tests do. Every container it started is removed, even on failure
or Ctrl-C. The last line printed is the figures as JSON.

    .venv/bin/python tests/bench/container_metrics.py [--sizes 50,100,200]
    .venv/bin/python tests/bench/container_metrics.py --cluster 100   # 3 nodes x 100
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hubkeeper import prtg  # noqa: E402
from hubkeeper.deploy.stack import free_ports, wait_for  # noqa: E402
from hubkeeper.hub.images import BASE_IMAGE, ensure_base  # noqa: E402
from tests.bench.cluster import cluster_benchmark  # noqa: E402
from tests.bench.needs import docker_engine  # noqa: E402

REPEATS = 5
DEADLINE = 900.0  # seconds for the whole run
_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "kB": 1e3, "MB": 1e6, "GB": 1e9}


def parse_size(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)\s*([A-Za-z]+)", text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def metric_values(text: str, name: str) -> dict[str, float]:
    """``id`` label -> value of every sample of ``name`` in an exposition."""
    values = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line.rpartition(" ")
            found = re.search(r'id="/docker/([0-9a-f]+)"', labels)
            if found:
                values[found.group(1)] = float(value)
    return values


def scalar(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rpartition(" ")[2])
    raise KeyError(name)


def timed(call: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


class Bench:
    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sizes
        self.deadline = time.monotonic() + DEADLINE
        self.client = docker.DockerClient(timeout=120, max_pool_size=64)
        self.api = docker.APIClient(timeout=120, max_pool_size=64)
        self.namespace = f"org.hubkeeper.bench-{secrets.token_hex(3)}"
        self.labels = {k: f"{self.namespace}.{k}" for k in ("user", "server", "hub", "image")}
        self.started: list[str] = []
        self.workdir = Path(tempfile.mkdtemp(prefix="hubkeeper-bench-"))
        self.exporter: subprocess.Popen[bytes] | None = None
        self.port = free_ports(1)[0]

    # -- setup ---------------------------------------------------------------------------

    def start_exporter(self) -> None:
        config = self.workdir / "hubkeeper.toml"
        labels = "\n".join(f'{k} = "{v}"' for k, v in self.labels.items())
        config.write_text(
            f'[logging]\nlevel = "warning"\n[labels]\n{labels}\n'
            f'[containers]\ncache_seconds = 0\nresync_seconds = 5\nreconcile = "off"\n'
            f"[containers.endpoint]\nport = {self.port}\n"
        )
        log = (self.workdir / "exporter.log").open("wb")
        self.exporter = subprocess.Popen(
            [sys.executable, "-m", "hubkeeper.cli", "export-containers", "--config", str(config)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: self._get("/healthz") is not None, 30, "the exporter")

    def _get(self, path: str) -> str | None:
        try:
            response = requests.get(f"http://127.0.0.1:{self.port}{path}", timeout=30)
        except requests.RequestException:
            return None
        return response.text if response.status_code == 200 else None

    def run_container(self, index: int, burner: bool = False) -> str:
        command = ["python3", "-c", "while True: pass"] if burner else ["sleep", "3600"]
        container = self.client.containers.run(
            BASE_IMAGE,
            command,
            detach=True,
            network_mode="host",
            mem_limit="64m",
            nano_cpus=500_000_000 if burner else None,
            labels={
                self.labels["user"]: f"bench-{index:03d}",
                self.labels["server"]: "",
                self.labels["hub"]: "bench",
                self.labels["image"]: BASE_IMAGE,
            },
        )
        self.started.append(container.id)
        return container.id

    def grow_to(self, size: int) -> None:
        first = len(self.started)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(self.run_container, range(first, size)))

    def seen(self) -> int:
        text = self._get("/metrics") or ""
        try:
            return int(scalar(text, 'hubkeeper_containers_seen{source="cgroup"}'))
        except KeyError:
            return -1

    # -- measurements --------------------------------------------------------------------

    def measure(self, size: int, burner: str) -> dict[str, Any]:
        self.grow_to(size)
        wait_for(lambda: self.seen() == size, 120, f"the exporter to see {size} containers")
        ids = self.started[:size]
        self._get("/metrics")  # warm-up
        scrapes, prtg_times, self_reported = [], [], []
        for _ in range(REPEATS):
            seconds, text = timed(lambda: self._get("/metrics"))
            scrapes.append(seconds)
            self_reported.append(scalar(text or "", "hubkeeper_containers_scrape_duration_seconds"))
            seconds, body = timed(lambda: self._get("/prtg/overview"))
            prtg_times.append(seconds)
            problems = prtg.check(json.loads(body or "null"))
            if problems:
                raise AssertionError(f"PRTG overview is not valid: {problems}")

        before_text = self._get("/metrics") or ""
        before_time = time.time()
        docker_stats_seconds, output = timed(
            lambda: (
                subprocess.run(
                    ["docker", "stats", "--no-stream", "--format", "{{json .}}", *ids],
                    capture_output=True,
                    text=True,
                    timeout=max(10.0, self.deadline - time.monotonic()),
                    check=True,
                ).stdout
            )
        )
        after_text = self._get("/metrics") or ""
        after_time = time.time()
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            api_seconds, bodies = timed(
                lambda: list(
                    pool.map(lambda cid: self.api.stats(cid, stream=False, one_shot=True), ids)
                )
            )
        last_text = self._get("/metrics") or ""
        # CPU seconds: docker's counter must lie between our readings just before and after
        bracket = [
            metric_values(text, "container_cpu_usage_seconds_total")
            for text in (after_text, last_text)
        ]
        cpu_errors = []
        for cid, body in zip(ids, bodies, strict=True):
            theirs = body["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9
            low, high = (reading[cid] for reading in bracket)
            outside = 0.0 if low <= theirs <= high else min(abs(theirs - low), abs(theirs - high))
            cpu_errors.append(outside / theirs * 100 if theirs else 0.0)

        docker_rows = [json.loads(line) for line in output.splitlines() if line.strip()]
        # our readings just before and just after bracket docker's: the closer one counts
        ours = [
            metric_values(text, "container_memory_working_set_bytes")
            for text in (before_text, after_text)
        ]
        memory_errors: list[tuple[float, str, float, float]] = []
        for row in docker_rows:
            full = next(cid for cid in ids if cid.startswith(row["ID"]))
            theirs = parse_size(row["MemUsage"].split("/")[0])
            readings = [reading[full] for reading in ours if full in reading]
            if readings and theirs > 0:
                closest = min(readings, key=lambda value: abs(value - theirs))
                error = abs(closest - theirs) / theirs * 100
                memory_errors.append((error, row["ID"], closest, theirs))
        worst = max(memory_errors, default=None)
        cpu_before = metric_values(before_text, "container_cpu_usage_seconds_total")[burner]
        cpu_after = metric_values(after_text, "container_cpu_usage_seconds_total")[burner]
        ours_cpu = 100 * (cpu_after - cpu_before) / (after_time - before_time)
        theirs_cpu = float(
            next(r for r in docker_rows if burner.startswith(r["ID"]))["CPUPerc"].rstrip("%")
        )
        status = Path(f"/proc/{self.exporter.pid}/status").read_text()  # type: ignore[union-attr]
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
        hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
        scrape_ms = statistics.median(scrapes) * 1000
        return {
            "containers": size,
            "scrape_ms_median": round(scrape_ms, 1),
            "scrape_ms_max": round(max(scrapes) * 1000, 1),
            "snapshot_ms_median": round(statistics.median(self_reported) * 1000, 1),
            "prtg_overview_ms_median": round(statistics.median(prtg_times) * 1000, 1),
            "docker_stats_no_stream_ms": round(docker_stats_seconds * 1000, 1),
            "stats_api_one_shot_concurrent_ms": round(api_seconds * 1000, 1),
            "speedup_vs_docker_stats": round(docker_stats_seconds * 1000 / scrape_ms, 1),
            "scrape_us_per_container": round(scrape_ms * 1000 / size, 1),
            "memory_diff_pct_max": round(worst[0], 2) if worst else None,
            "memory_diff_pct_median": round(statistics.median(e[0] for e in memory_errors), 3)
            if memory_errors
            else None,
            "memory_worst": {"id": worst[1], "exporter": worst[2], "docker_stats": worst[3]}
            if worst
            else None,
            "memory_compared": len(memory_errors),
            "cpu_seconds_diff_pct_max": round(max(cpu_errors), 3),
            "cpu_burner_pct_exporter": round(ours_cpu, 1),
            "cpu_burner_pct_docker_stats": round(theirs_cpu, 1),
            "exporter_rss_mb": round(rss, 1),
            "exporter_peak_rss_mb": round(hwm, 1),
        }

    # -- teardown ------------------------------------------------------------------------

    def cleanup(self) -> None:
        def remove(container_id: str) -> None:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_container(container_id, force=True)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(remove, self.started))
        left = self.client.containers.list(all=True, filters={"label": self.labels["user"]})
        if self.exporter is not None and self.exporter.poll() is None:
            os.killpg(self.exporter.pid, signal.SIGTERM)
            try:
                self.exporter.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.exporter.pid, signal.SIGKILL)
                self.exporter.wait(5)
        if left:
            print(f"warning: {len(left)} containers could not be removed", file=sys.stderr)

    def run(self) -> dict[str, Any]:
        self.start_exporter()
        burner = self.run_container(0, burner=True)
        results = []
        for size in self.sizes:
            if time.monotonic() > self.deadline:
                raise TimeoutError("benchmark deadline reached")
            result = self.measure(size, burner)
            print(json.dumps(result), flush=True)
            results.append(result)
        largest, smallest = results[-1], results[0]
        return {
            "benchmark": "container_metrics",
            "results": results,
            "per_container_cost_ratio_largest_vs_smallest": round(
                largest["scrape_us_per_container"] / smallest["scrape_us_per_container"], 2
            ),
            "targets": {
                "scrape_ms_at_largest<=100": largest["scrape_ms_median"] <= 100,
                "speedup_vs_docker_stats>=20": largest["speedup_vs_docker_stats"] >= 20,
                "exporter_rss_mb<=60": max(r["exporter_peak_rss_mb"] for r in results) <= 60,
                "memory_within_5pct": all((r["memory_diff_pct_max"] or 0) <= 5 for r in results),
                "cpu_within_5pct": all(r["cpu_seconds_diff_pct_max"] <= 5 for r in results),
            },
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,100,200", help="container counts, ascending")
    parser.add_argument(
        "--cluster", type=int, metavar="PER_NODE",
        help="cluster mode instead: a 3-node Swarm with PER_NODE containers on each node "
        "(tests/bench/cluster.py; needs root)",
    )  # fmt: skip
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.cluster:
        print(json.dumps(cluster_benchmark(args.cluster)), flush=True)
        return 0
    sizes = [int(size) for size in args.sizes.split(",")]
    with docker_engine() as client:
        ensure_base(client, print)
        bench = Bench(sizes)
        try:
            summary = bench.run()
        finally:
            bench.cleanup()
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
