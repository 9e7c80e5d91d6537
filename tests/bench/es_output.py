"""Benchmark of the shipper's sending side: the Elasticsearch output's CPU, against a plain
``requests`` bulk loader (the peer) in the same run, on one real Elasticsearch.

1. start-up: ``hubkeeper ship-logs`` (byte-compiled first, as installed) on a file of
   ``--batch`` bench lines, its CPU seconds from its start to the acknowledgement of that
   batch (``--starts`` times; the median),
   and the CPU of importing the output's module alone in a fresh interpreter (``import
   hubkeeper.shippers.delivery`` already done);
2. per bulk request: ``--requests`` bulk requests of ``--batch`` bench documents each (a
   spooled batch, as the sender has it), through ``ElasticsearchOutput.bulk`` (building the
   body, the request, parsing the answer) and through the plain loader (body built before
   the clock starts, ``requests.Session.post``, the answer parsed); CPU milliseconds of this
   process per request (median and mean). The indices are deleted first: every document is
   new (no 409 path).

Pass ``--url`` to use a running Elasticsearch (its ``es-output-*`` indices are deleted);
without it the bench starts its own. The last line printed is the figures as JSON.

    .venv/bin/python tests/bench/es_output.py [--requests 200] [--starts 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hubkeeper.config import ShipperElasticsearchConfig  # noqa: E402
from hubkeeper.deploy.elasticsearch import Elasticsearch  # noqa: E402
from hubkeeper.deploy.stack import free_ports, to_toml, wait_for  # noqa: E402
from hubkeeper.shippers.elasticsearch import ElasticsearchOutput  # noqa: E402
from hubkeeper.shippers.store import Record, bulk_body  # noqa: E402
from tests.bench.shipping import (  # noqa: E402
    _caught_up,
    byte_compile,
    cpu_seconds,
    parse_only,
    write_files,
)

PREFIX = "es-output"
IMPORT = (
    "import time, hubkeeper.shippers.delivery; t = time.process_time(); "
    "import hubkeeper.shippers.elasticsearch; print(time.process_time() - t)"
)


def batches(work: Path, count: int, size: int) -> list[list[Record]]:
    """``count`` spooled batches of ``size`` bench documents (their index prefix ours)."""
    paths, _events = write_files(work / "lines", count * size * 11 // 10)  # and tracebacks
    _cpu, records = parse_only(paths, work / "parse", keep=True)
    assert len(records) >= count * size, f"{len(records)} documents for {count * size}"
    ours = [
        Record.of(r.key, r.start, r.resume, r.index.replace("ceiling-logs-", f"{PREFIX}-", 1),
                  r.id, r.source, r.doc)
        for r in records
    ]  # fmt: skip
    return [ours[i : i + size] for i in range(0, count * size, size)]


def clean(url: str) -> None:
    """No index of ours left: every document sent next is new (deleted by name: a
    wildcard delete is refused by default)."""
    found = requests.get(f"{url}/_cat/indices/{PREFIX}-*?h=index&format=json", timeout=60)
    names = ",".join(row["index"] for row in found.json())
    if names:
        requests.delete(f"{url}/{names}", timeout=120).raise_for_status()


def startup(url: str, work: Path, size: int) -> float:
    """CPU seconds of ``ship-logs`` from its start to the acknowledgement of ``size`` lines."""
    clean(url)
    work.mkdir(parents=True)
    paths, events = write_files(work / "lines", size)
    port = free_ports(1)[0]
    shipper = {
        "state_dir": str(work / "state"), "poll_interval": 0.05, "endpoint": {"port": port},
        "batch_max_events": size, "sources": [{"name": "access", "paths": [str(paths["access"])],
                                                "parser": "nginx_access", "timezone": "UTC"}],
        "elasticsearch": {"hosts": [url], "index_prefix": PREFIX, "replicas": 0,
                          "retention_days": 0},
    }  # fmt: skip
    config = work / "shipper.toml"
    config.write_text(to_toml({"logging": {"level": "warning"}, "shipper": shipper}))
    lines = sum(1 for _ in paths["access"].open())
    byte_compile()
    process = subprocess.Popen(
        [sys.executable, "-m", "hubkeeper.cli", "ship-logs", "--config", str(config)],
        stdout=(work / "shipper.log").open("wb"), stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    try:
        wait_for(lambda: _caught_up(port, lines), 120, "the shipper", interval=0.1)
        return cpu_seconds(process.pid)
    finally:
        process.terminate()
        process.wait(30)


def per_request(url: str, sent: list[list[Record]]) -> tuple[list[float], list[float]]:
    """CPU seconds per bulk request: the output's, the plain loader's (half the batches
    each, alternating)."""
    clean(url)
    config = ShipperElasticsearchConfig(hosts=[url], index_prefix=PREFIX, replicas=0)
    output = ElasticsearchOutput(config)
    output.install_templates()
    session = requests.Session()
    headers = {"Content-Type": "application/x-ndjson"}
    ours: list[float] = []
    peer: list[float] = []
    for number, batch in enumerate(sent):
        if number % 2:
            body = bulk_body(batch)
            started = time.process_time()
            answer = session.post(f"{url}/_bulk?filter_path=errors", data=body, headers=headers)
            assert not answer.json()["errors"]
            peer.append(time.process_time() - started)
        else:
            started = time.process_time()
            results = output.bulk(batch)
            ours.append(time.process_time() - started)
            assert {r.status for r in results} == {201}
    return ours, peer


def milliseconds(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values) * 1000, 3),
        "mean": round(statistics.fmean(values) * 1000, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running Elasticsearch (default: start one)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hubkeeper-bench-es-output-"))
    es = None if args.url else Elasticsearch.create(heap="1g")
    figures: dict[str, Any] = {"batch": args.batch, "requests": args.requests}
    try:
        sent = batches(work, args.requests + 20, args.batch)
        if es is not None:
            es.start()
        url = args.url or es.url  # type: ignore[union-attr]
        imports = [
            float(subprocess.run([sys.executable, "-c", IMPORT], capture_output=True, text=True,
                                 check=True, cwd=ROOT).stdout)
            for _ in range(args.starts)
        ]  # fmt: skip
        figures["import_cpu_s"] = round(statistics.median(imports), 3)
        starts = [startup(url, work / f"start{n}", args.batch) for n in range(args.starts)]
        figures["startup_cpu_s"] = round(statistics.median(starts), 3)
        print(
            f"import of the output: {figures['import_cpu_s']} CPU s; ship-logs to its first "
            f"acknowledged batch: {figures['startup_cpu_s']} CPU s (medians)",
            flush=True,
        )
        per_request(url, sent[:20])  # warm-up
        ours, peer = per_request(url, sent[20:])
        figures["output_cpu_ms_per_request"] = milliseconds(ours)
        figures["requests_cpu_ms_per_request"] = milliseconds(peer)
        print(
            f"per bulk request of {args.batch} documents, CPU ms: output "
            f"{figures['output_cpu_ms_per_request']}, plain requests loader "
            f"{figures['requests_cpu_ms_per_request']}",
            flush=True,
        )
    finally:
        if es is not None:
            es.remove()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
