"""The spool's CPU per record, this checkout's ``shippers/store.py`` against the one of a
git revision (the peer), alternately in one run: the reader's spool write (the records'
spool bytes, without the write itself) and the sender's per-batch work (spool read, bulk
body, offsets, acknowledgement) over records of the shipping benchmark's mix, in batches
of 1000. CPU time (process_time), the best of ``--rounds`` rounds each.

    .venv/bin/python tests/bench/spool_batches.py [--against 5fc5bed] [--lines 100000]
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hubkeeper.shippers import store  # noqa: E402
from hubkeeper.shippers.shipper import READ_BUDGET, collect_less  # noqa: E402
from hubkeeper.shippers.sources import Files, Settings, make_sources  # noqa: E402
from tests.bench.shipping import source_configs, write_files  # noqa: E402

BATCH_EVENTS, BATCH_BYTES = 1000, 5 << 20


def load_store(revision: str, folder: Path) -> ModuleType:
    """``shippers/store.py`` as it is at ``revision``, as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{revision}:shippers/store.py"], cwd=ROOT, check=True,
        capture_output=True,
    ).stdout  # fmt: skip
    path = folder / "store_peer.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("hubkeeper.shippers.store_peer", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def reads(folder: Path, lines: int) -> list[list[Any]]:
    """The records of each reader cycle over the benchmark's mix."""
    paths, _events = write_files(folder, lines)
    files = Files(
        make_sources(source_configs(paths), None), store.Registry(folder / "registry.json"),
        Settings(host_name="bench", multiline_timeout=3600.0, index_prefix="bench-logs"), {},
    )  # fmt: skip
    files.scan()
    cycles = []
    while True:
        records, moves = files.read(READ_BUDGET)
        if not records:
            break
        cycles.append(records)
        files.advance(moves)
    files.close()
    return cycles


def one_round(module: ModuleType, cycles: list[list[Any]], folder: Path) -> dict[str, float]:
    """CPU seconds of the spool write's bytes and of the sender's batches."""
    chunked = "chunk_events" in inspect.signature(module.Spool).parameters
    make = getattr(module.Record, "of", module.Record)  # a record of a document (older: Record)
    own = [
        [make(r.key, r.start, r.resume, r.index, r.id, r.source, r.doc) for r in c] for c in cycles
    ]
    spool = module.Spool(folder / "spool", 1 << 40, (0, 0), segment_bytes=1 << 40)
    registry = module.Registry(folder / "registry.json")
    started = time.process_time()
    written = []
    for records in own:
        if chunked:
            written.append(b"".join(module.chunks(records, BATCH_EVENTS // 4, BATCH_BYTES // 4)))
        else:
            written.append(b"".join([record.line() for record in records]))
    write_cpu = time.process_time() - started
    for records in own:
        spool.append(records if chunked else [record.line() for record in records])
    cursor, batches, events = (0, 0), 0, 0
    started = time.process_time()
    while True:
        batch, after = spool.read(cursor, BATCH_EVENTS, BATCH_BYTES)
        if not batch:
            break
        body = module.bulk_body(batch)
        registry.acknowledge(batch.offsets(), after)
        cursor, batches, events = after, batches + 1, events + len(batch)
        assert body
    send_cpu = time.process_time() - started
    started = time.process_time()
    for _ in range(20):
        registry.save()
    commit_cpu = (time.process_time() - started) / 20
    spool.close()
    for path in (folder / "spool").iterdir():
        path.unlink()
    return {
        "write_us_per_record": write_cpu / events * 1e6,
        "send_us_per_record": send_cpu / events * 1e6,
        "send_ms_per_batch": send_cpu / batches * 1e3,
        "events_per_batch": events / batches,
        "commit_ms": commit_cpu * 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="5fc5bed", help="the peer's git revision")
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--only", choices=["this", "peer", "none"],
        help="one round of one side only, or none (for instruction counts under callgrind: "
        "a side's count less the count of none)",
    )  # fmt: skip
    args = parser.parse_args()
    collect_less()
    work = Path(tempfile.mkdtemp(prefix="hubkeeper-bench-spool-"))
    peer = load_store(args.against, work)
    cycles = reads(work / "files", args.lines)
    sides = {"this": ("this", store), "peer": (args.against, peer)}
    chosen = [sides[args.only]] if args.only in sides else [] if args.only else [*sides.values()]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _module in chosen}
    for _ in range(1 if args.only else args.rounds):  # alternately, against the drift
        for name, module in chosen:
            runs[name].append(one_round(module, cycles, work / name))
    figures: dict[str, Any] = {"lines": args.lines, "events": sum(map(len, cycles))}
    for name, rounds in runs.items():
        best = {key: min(r[key] for r in rounds) for key in rounds[0]}
        figures[name] = {key: round(value, 3) for key, value in best.items()}
        print(f"{name:>10}: " + ", ".join(f"{k} {v:.3f}" for k, v in best.items()), flush=True)
    subprocess.run(["rm", "-rf", str(work)], check=False)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
