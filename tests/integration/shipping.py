"""A real ``hubkeeper ship-logs`` process against the real Elasticsearch, for the tests."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from docker.models.containers import Container

from hubkeeper.config import ShipperElasticsearchConfig
from hubkeeper.deploy.elasticsearch import Elasticsearch
from hubkeeper.deploy.stack import Stack, free_ports, to_toml, wait_for
from hubkeeper.hub.images import SINGLEUSER_IMAGE
from hubkeeper.shippers.mapping import templates

STARTED: list[ShipperRun] = []


@pytest.fixture(autouse=True)
def stop_shippers() -> Iterator[None]:
    """Stop every shipper a test started, even when it failed."""
    yield
    while STARTED:
        run = STARTED.pop()
        if run.running():
            try:
                run.stop()
            except subprocess.TimeoutExpired:
                run.kill()


@dataclass
class ShipperRun:
    """One shipper with its own config, state folder and index names (``<name>-logs-*``)."""

    workdir: Path
    es: Elasticsearch | None
    name: str
    sources: list[dict[str, Any]]
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    shipper: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state = self.workdir / "state"
        self.port = free_ports(1)[0]
        self.config_path = self.workdir / "hubkeeper.toml"
        data: dict[str, Any] = {
            **self.sections,
            "shipper": {
                "state_dir": str(self.state),
                "poll_interval": 0.05,
                "scan_interval": 0.2,
                "batch_max_wait": 0.2,
                "multiline_timeout": 0.3,
                "retry_backoff": 0.2,
                "retry_backoff_max": 2.0,
                **self.shipper,
                "endpoint": {"port": self.port},
                "elasticsearch": {
                    "hosts": [self.es.url if self.es else "http://127.0.0.1:9"],
                    "index_prefix": f"{self.name}-logs",
                    "dead_letter_index": f"{self.name}-dead",
                    "replicas": 0,
                    "retention_days": 0,
                    "timeout": 10.0,
                },
                "sources": self.sources,
            },
        }
        self.config_path.write_text(to_toml(data), encoding="utf-8")

    # --- the process -------------------------------------------------------------------

    def start(self) -> ShipperRun:
        STARTED.append(self)
        with (self.workdir / "shipper.log").open("ab") as log:
            command = ["-m", "hubkeeper.cli", "ship-logs", "--config", str(self.config_path)]
            self.process = subprocess.Popen(
                [sys.executable, *command],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        wait_for(self.healthy, 30, "the shipper's endpoint")
        return self

    def healthy(self) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).ok
        except requests.RequestException:
            return False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no chance to flush or commit anything."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        os.kill(self.process.pid, signal.SIGTERM)
        return self.process.wait(15)

    def log(self) -> list[dict[str, Any]]:
        lines = (self.workdir / "shipper.log").read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def metrics(self) -> str:
        return requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text

    def metric(self, name: str, labels: str = "") -> float:
        prefix = f"{name}{{{labels}}} " if labels else f"{name} "
        for line in self.metrics().splitlines():
            if line.startswith(prefix):
                return float(line.split()[-1])
        return 0.0

    # --- progress ----------------------------------------------------------------------

    def acked(self, path: Path) -> int:
        """The acknowledged offset of the file now at ``path`` (by inode)."""
        try:
            registry = json.loads((self.state / "registry.json").read_text())
        except (OSError, ValueError):
            return -1
        ino = path.stat().st_ino
        return max((e["acked"] for e in registry["entries"] if e["ino"] == ino), default=-1)

    def wait_shipped(self, *paths: Path, timeout: float = 90) -> None:
        """Until every byte now in ``paths`` is acknowledged."""
        sizes = {path: path.stat().st_size for path in paths}
        wait_for(
            lambda: all(self.acked(path) >= size for path, size in sizes.items()),
            timeout,
            f"the shipper to acknowledge {', '.join(p.name for p in paths)}",
            interval=0.2,
        )

    # --- what arrived ------------------------------------------------------------------

    def docs(self, index: str | None = None, query: dict | None = None) -> list[dict[str, Any]]:
        assert self.es is not None
        return search(self.es, index or f"{self.name}-logs-*", query)

    def dead_letters(self) -> list[dict[str, Any]]:
        assert self.es is not None
        return search(self.es, f"{self.name}-dead-*")


def stack_shipper(stack: Stack, workdir: Path, es: Elasticsearch, name: str) -> ShipperRun:
    nginx_logs = Path(stack.config.nginx.prefix) / "logs"
    files = [
        ("hub", stack.logs / "hub-a.log", "jupyterhub"),
        ("proxy", stack.logs / "hub-a-proxy.log", "jupyterhub"),  # beside its hub, not its child
        ("nginx-access", nginx_logs / "access.log", "nginx_access"),
        ("nginx-error", nginx_logs / "error.log", "nginx_error"),
    ]
    sources = [{"name": n, "paths": [str(path)], "parser": parser} for n, path, parser in files]
    return ShipperRun(
        workdir,
        es,
        name,
        [*sources, {"name": "containers", "type": "docker"}],
        sections={
            "docker": {"url": stack.config.docker.url},
            "jupyterhub": {"name": stack.config.jupyterhub.name},
        },
    )


def user_process(stack: Stack, user: str, command: list[str], **options: Any) -> Container:
    """A container of ``user`` as the hub labels its servers, running ``command``."""
    labels = stack.config.labels
    return stack.docker.containers.run(
        SINGLEUSER_IMAGE,
        command,
        labels={
            labels.user: user,
            labels.server: "",
            labels.hub: stack.config.jupyterhub.name,
            labels.image: SINGLEUSER_IMAGE,
        },
        network_mode="host",
        detach=True,
        **options,
    )


def search(es: Elasticsearch, index: str, query: dict | None = None) -> list[dict[str, Any]]:
    """Every matching document (``_source`` plus ``_id`` and ``_index``), by file offset."""
    requests.post(f"{es.url}/{index}/_refresh", timeout=30)
    body = {"size": 5000, "query": query or {"match_all": {}}, "sort": ["_doc"]}
    url = f"{es.url}/{index}/_search?scroll=1m&ignore_unavailable=true&allow_no_indices=true"
    response = requests.post(url, json=body, timeout=60)
    deadline = time.monotonic() + 30
    while response.status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.5)  # an index just created: its shard is not started yet
        response = requests.post(url, json=body, timeout=60)
    docs: list[dict[str, Any]] = []
    while True:
        response.raise_for_status()
        page = response.json()
        hits = page["hits"]["hits"]
        docs += [{**hit["_source"], "_id": hit["_id"], "_index": hit["_index"]} for hit in hits]
        if not hits or "_scroll_id" not in page:
            break
        response = requests.post(
            f"{es.url}/_search/scroll", json={"scroll": "1m", "scroll_id": page["_scroll_id"]},
            timeout=60,
        )  # fmt: skip
    if "_scroll_id" in page:
        requests.delete(
            f"{es.url}/_search/scroll", json={"scroll_id": page["_scroll_id"]}, timeout=10
        )
    return sorted(docs, key=lambda d: (d.get("log.file.path", ""), d.get("log.offset", 0)))


def dynamic_json_keys(es: Elasticsearch, prefix: str, dataset: str) -> None:
    """A site's own template for ``<prefix>-<dataset>-*``: hubkeeper's, except that the keys
    of JSON lines are mapped one by one (hubkeeper's one flattened ``hubkeeper.json`` never
    conflicts), so a key seen with two types is a mapping conflict: a dead letter."""
    ours = templates(ShipperElasticsearchConfig(index_prefix=prefix))[prefix]
    mappings = copy.deepcopy(ours["template"]["mappings"])
    mappings["properties"]["hubkeeper"]["properties"]["json"] = {"type": "object"}
    body = {"index_patterns": [f"{prefix}-{dataset}-*"], "priority": 300,
            "template": {"mappings": mappings}}  # fmt: skip
    answer = requests.put(f"{es.url}/_index_template/{prefix}-{dataset}", json=body, timeout=30)
    answer.raise_for_status()


class Writer(threading.Thread):
    """Appends numbered lines to a file (O_APPEND, as loggers do) at about ``rate`` a second.

    ``pause`` holds the writer (to rotate between two writes); ``reopen`` makes it open
    the path again (after a rename).
    """

    def __init__(self, path: Path, count: int, rate: float, tag: str = "line") -> None:
        super().__init__(daemon=True)
        self.path, self.count, self.rate, self.tag = path, count, rate, tag
        self.lock = threading.Lock()
        self.written = 0
        self._reopen = False

    def line(self, number: int) -> str:
        return f"{self.tag} {number:07d} {'x' * (number % 50)}\n"

    def reopen(self) -> None:
        self._reopen = True

    def run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        started = time.monotonic()
        try:
            for number in range(self.count):
                with self.lock:
                    if self._reopen:
                        os.close(fd)
                        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                        self._reopen = False
                    os.write(fd, self.line(number).encode())
                    self.written += 1
                ahead = started + (number + 1) / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        finally:
            os.close(fd)

    def expected(self) -> list[str]:
        return [self.line(number).rstrip("\n") for number in range(self.count)]


def assert_exactly_once(docs: list[dict[str, Any]], expected: list[str]) -> None:
    """Every expected message arrived exactly once, and nothing else did."""
    messages = [doc["message"] for doc in docs]
    missing = set(expected) - set(messages)
    assert not missing, f"{len(missing)} lines lost, e.g. {sorted(missing)[:3]}"
    assert len(messages) == len(set(messages)), "duplicates: " + repr(
        sorted({m for m in messages if messages.count(m) > 1})[:3]
    )
    assert sorted(messages) == sorted(expected)
