"""Benchmark of ``hubkeeper ship-logs`` against rsyslog and a plain bulk loader.

Writes realistic lines (hub requests, spawns and tracebacks, proxy lines, NGINX access and
error lines, in the proportions of a busy lab; default one million) into three files, then
measures on one real Elasticsearch (its own instance, 1 GB heap):

1. parsing and serialization alone, in this process (one core, no output, the garbage
   collector tuned and the files read in cycles of the reader's budget, as in
   ``ship-logs``; each cycle's records joined into spool bytes, as the reader does before
   its write, and let go), of the ordinary mix and of a mix with 10% hostile lines
   (tests/hostile.py); the ordinary mix also by the Python path alone (without the native
   fast path for NGINX access lines, ``native/``), its peer;
2. the ceiling: a plain bulk loader sending the same documents, pre-serialized, with the
   shipper's batch size, one request at a time;
3. ``hubkeeper ship-logs`` end to end (files to acknowledged documents), with its CPU time
   (user and kernel, and the kernel's part alone), its modules byte-compiled first as an
   installation's are;
4. rsyslog (``imfile`` into ``omelasticsearch``, bulk mode) on the same files into another
   index, with its CPU time (the same two figures). rsyslog ships each line as it is (no
   parsing) into a small JSON document; the shipper parses every line into ECS fields.

The machine has 2 CPUs, shared by Elasticsearch and the shipper under test. The last line
printed is the figures as JSON.

Where the shipper's CPU goes (``stages`` in the JSON): step 3 runs under ``py-spy record
--gil --nonblocking`` (installed with the test extras), which samples the stack of the
thread holding the GIL (the one spending Python CPU; the process is not paused). Each sample
goes to the stage of the innermost frame that :data:`STAGES` names (read, frame, parse,
redact, id, serialize, enrich, spool write, spool read, bulk, acknowledgement; the loops'
own code as ``loop``, imports as ``startup``, anything else, such as the metrics
endpoint, as ``other``; the sender's cutting of a spooled batch into its bulk body counts
as ``bulk``, its files' offsets as ``ack``; the native fast path, which reads, parses and
writes an access line in one call that py-spy cannot see into, as ``native``). A stage's
share of the samples times the CPU seconds measured for the whole run is its CPU per
100,000 lines (time in system calls that release the GIL, such as fsync, is spread over
the stages that way). Sampling is statistical (a few thousand samples): shares move by a
point or two between runs. Without py-spy the breakdown is left out. Compare ship-logs
with rsyslog in the same run: on this shared machine both move by about ten percent from
run to run.

    .venv/bin/python tests/bench/shipping.py [--lines 1000000]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hubkeeper.config import ShipperSource  # noqa: E402
from hubkeeper.deploy.elasticsearch import Elasticsearch  # noqa: E402
from hubkeeper.deploy.stack import free_ports, to_toml, wait_for  # noqa: E402
from hubkeeper.shippers import sources  # noqa: E402
from hubkeeper.shippers.shipper import READ_BUDGET, collect_less  # noqa: E402
from hubkeeper.shippers.sources import Files, Settings, make_sources  # noqa: E402
from hubkeeper.shippers.store import Record, Registry, bulk_body, chunks  # noqa: E402
from tests.hostile import HOSTILE  # noqa: E402

USERS = [f"user{n:03d}" for n in range(200)]
PATHS = [
    "/api/kernels",
    "/api/contents/work/analysis.ipynb",
    "/api/sessions",
    "/lab",
    "/static/app.js",
]
TICKS = 1_000_000 / 3600  # lines per second of the simulated hour


def stamp(n: int, fmt: str) -> str:
    seconds = 1795600000 + n / TICKS
    return time.strftime(fmt, time.gmtime(seconds)) + f".{int(seconds * 1000) % 1000:03d}"


TRACEBACK = (
    "    Traceback (most recent call last):\n"
    '      File "/usr/lib/python3/dist-packages/jupyterhub/apihandlers/base.py", line 119\n'
    "        model = json.loads(body)\n"
    "    json.decoder.JSONDecodeError: Expecting property name enclosed in double quotes\n"
)


def hub_lines(n: int, rng: random.Random) -> str:
    user = rng.choice(USERS)
    head = f"[I {stamp(n, '%Y-%m-%d %H:%M:%S')} JupyterHub"
    kind = rng.random()
    if kind < 0.80:
        path = rng.choice([f"/hub/api/users/{user}", f"/hub/api/users/{user}/activity", "/hub/api"])
        status, method = rng.choice([(200, "GET"), (200, "POST"), (204, "DELETE"), (404, "GET")])
        took = f"{rng.uniform(0.5, 90):.2f}ms"
        return f"{head} log:192] {status} {method} {path} ({user}@127.0.0.1) {took}\n"
    if kind < 0.90:
        return f"{head} base:1192] User {user} took {rng.uniform(1, 9):.3f} seconds to start\n"
    port = rng.randrange(30000, 60000)
    if kind < 0.99:
        return f"{head} proxy:335] Adding user {user} to proxy /user/{user}/ => http://127.0.0.1:{port}\n"
    return f"[E{head[2:]} base:122] Couldn't parse JSON\n" + TRACEBACK


def proxy_line(n: int, rng: random.Random) -> str:
    user = rng.choice(USERS)
    port = rng.randrange(30000, 60000)
    message = rng.choice(
        [
            "200 GET /api/routes ",
            f"Adding route /user/{user} -> http://127.0.0.1:{port}",
            f"201 POST /api/routes/user/{user} ",
            f"Removing route /user/{user}",
        ]
    )
    return f"{stamp(n, '%Y-%m-%dT%H:%M:%S')}Z [ConfigProxy] \x1b[32minfo\x1b[39m: {message}\n"


def access_line(n: int, rng: random.Random) -> str:
    user = rng.choice(USERS)
    when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(1795600000 + n / TICKS))
    path = f"/user/{user}{rng.choice(PATHS)}"
    status = rng.choice([200, 200, 200, 200, 204, 302, 304, 404])
    return (
        f'127.0.0.1 - - [{when}] "GET {path} HTTP/1.1" {status} {rng.randrange(0, 90000)} '
        f'"http://127.0.0.1:8000/user/{user}/lab" "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"\n'
    )


def error_line(n: int, rng: random.Random) -> str:
    when = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(1795600000 + n / TICKS))
    return (
        f"{when} [error] 2101#2101: *{n} upstream timed out (110: Connection timed out) while "
        f'reading response header from upstream, client: 127.0.0.1, server: , request: "GET '
        f'/user/{rng.choice(USERS)}/api/kernels HTTP/1.1", upstream: "http://127.0.0.1:8001/", '
        'host: "127.0.0.1:8000"\n'
    )


# The hostile lines of the tests, the longest cut to 4 KiB (as long as an ordinary line can
# be while lines a second stay comparable; the quadratic pattern took 10 ms on such a line).
HOSTILE_LINES = [line[:4096].decode("utf-8", "replace") + "\n" for _name, line in HOSTILE]


def write_files(folder: Path, total: int, hostile: float = 0.0) -> tuple[dict[str, Path], int]:
    """hub.log (hub and proxy lines), access.log, error.log; ``total`` lines in all, a
    ``hostile`` share of them from tests/hostile.py, spread over the three files; and the
    number of events (lines that do not continue a traceback)."""
    rng = random.Random(7)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.log" for name in ("hub", "access", "error")}
    handles = {name: path.open("w") for name, path in paths.items()}
    written = 0
    while written < total:
        pick = rng.random()
        if rng.random() < hostile:
            text = rng.choice(HOSTILE_LINES)
            handles[rng.choice(list(handles))].write(text)
        elif pick < 0.36:
            text = hub_lines(written, rng)
            handles["hub"].write(text)
        elif pick < 0.45:
            text = proxy_line(written, rng)
            handles["hub"].write(text)
        elif pick < 0.97:
            text = access_line(written, rng)
            handles["access"].write(text)
        else:
            text = error_line(written, rng)
            handles["error"].write(text)
        written += text.count("\n")
    for handle in handles.values():
        handle.close()
    continuations = sum(1 for line in paths["hub"].open() if line.startswith(" "))
    return paths, written - continuations


SOURCES = [("hub", "jupyterhub"), ("access", "nginx_access"), ("error", "nginx_error")]


def source_configs(paths: dict[str, Path]) -> list[ShipperSource]:
    return [
        ShipperSource(name=name, paths=[str(paths[name])], parser=parser, timezone="UTC")
        for name, parser in SOURCES
    ]


def parse_only(
    paths: dict[str, Path], work: Path, keep: bool = False
) -> tuple[float, list[Record]]:
    """CPU seconds, and (``keep``) the records, for the ceiling loader; with the
    garbage collector set as ``ship-logs`` sets it. Each cycle's records are joined into
    spool bytes and then let go, as ``ship-logs``' reader lets them go once written: kept
    (a million of them), they would time the kernel's page faults for the memory they take
    and the collector's walks over them, a third of the CPU, not parsing."""
    collect_less()
    work.mkdir(parents=True, exist_ok=True)
    files = Files(
        make_sources(source_configs(paths), None),
        Registry(work / "registry.json"),
        Settings(host_name="bench", multiline_timeout=3600.0, index_prefix="ceiling-logs"),
        {},
    )
    files.scan()
    kept: list[Record] = []
    started = time.process_time()
    while True:  # as ship-logs' reader does (its chunks), the spool's write left out
        records, moves = files.read(READ_BUDGET)
        if not records:
            break
        b"".join(chunks(records, 250, 5 << 18))
        if keep:
            kept += records
        files.advance(moves)
    cpu = time.process_time() - started
    files.close()
    return cpu, kept


def bulk_ceiling(es: Elasticsearch, records: list[Record], batch: int = 1000) -> float:
    """Send bulk bodies of the records (built before the clock starts) one request at a
    time, as the shipper does; seconds."""
    bodies = [bulk_body(records[start : start + batch]) for start in range(0, len(records), batch)]
    session = requests.Session()
    headers = {"Content-Type": "application/x-ndjson"}
    started = time.monotonic()
    for body in bodies:
        answer = session.post(
            f"{es.url}/_bulk?filter_path=errors", data=body, headers=headers, timeout=120
        )
        answer.raise_for_status()
        assert not answer.json()["errors"]
    return time.monotonic() - started


def count(es: Elasticsearch, pattern: str) -> int:
    requests.post(f"{es.url}/{pattern}/_refresh", timeout=60)
    answer = requests.get(f"{es.url}/{pattern}/_count", timeout=60)
    return int(answer.json().get("count", 0)) if answer.ok else 0


def cpu_seconds(pid: int, kernel: bool = False) -> float:
    """The process's CPU seconds (user and kernel; ``kernel``: the kernel's only)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[12]) if kernel else int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def byte_compile() -> None:
    """Byte-compile hubkeeper's folders, as installing it does: ``ship-logs`` then starts as
    an installed one does, not compiling its modules anew at each start (an editable
    checkout run with ``PYTHONDONTWRITEBYTECODE`` caches none; about 0.05 CPU s)."""
    for folder in ("hubkeeper", "shippers", "watchers", "alerts", "dashboards", "deploy", "hub"):
        compileall.compile_dir(ROOT / folder, quiet=1)


# Stage of a py-spy frame (``function (path:line)``): the first rule matching the innermost
# frame that any rule matches. py-spy names a file by its path below its sys.path entry:
# ``shippers/...`` in an editable install, ``hubkeeper/shippers/...`` in an installed one.
STAGES: list[tuple[str, re.Pattern[str]]] = [
    (stage, re.compile(pattern.replace(r"\(shippers/", r"\((?:hubkeeper/)?shippers/")))
    for stage, pattern in [
        ("native", r"^Files\._fast_events \(shippers/"),  # (all of an access line's stages)
        ("serialize", r"^to_json \(shippers/"),
        ("id", r"^_?event_id \(shippers/"),
        ("read", r"^(read_lines|_newline_after|decode) \(shippers/framing"
                 r"|<lambda> \(shippers/sources"),
        ("frame", r"^(events_from|_resume|_with_resume|Assembler\.|DockerRecords\.)"),
        ("parse", r"\(shippers/parsers\.py"),
        ("redact", r"\(hubkeeper/redact\.py"),
        ("enrich", r"^(Files\._document|Files\._record|_Common\.of|daily_index) \(shippers/"),
        ("spool_write", r"^(chunks|_chunk|_furthest|Spool\.append) \(shippers/"),
        ("spool_read", r"^(Spool\.read|_head|Batch\.(__init__|records)|_records) \(shippers/"),
        ("bulk", r"^(ElasticsearchOutput\.(bulk|_call)|Nodes\.\w+|bulk_body) "
                 r"|\((urllib3|http|json)/"),
        ("ack", r"^(settle|Delivery\.send|Shipper\._answered|Metrics\.count|Registry\.|"
                r"Shipper\._commit|Spool\.release|Batch\.offsets|_merge) "),
        ("loop", r"^(Shipper\._read_loop|Shipper\._send_loop|Shipper\._count_read|Files\.) "),
    ]
]  # fmt: skip


def stage_of(stack: str) -> str:
    if "_find_and_load (" in stack:
        return "startup"  # importing modules
    for frame in reversed(stack.split(";")):
        for stage, pattern in STAGES:
            if pattern.search(frame):
                return stage
    return "other"


def stage_shares(profile: Path) -> dict[str, float]:
    """The share of py-spy's samples (raw format: ``frame;frame;... count``) per stage."""
    counts: dict[str, int] = {}
    pending = ""
    for line in profile.read_text().splitlines():
        stack, _, number = (pending + line).rpartition(" ")
        if not number.isdecimal():  # a name read mid-change (``--nonblocking``) had a newline
            pending += line
            continue
        pending = ""
        stage = stage_of(stack)
        counts[stage] = counts.get(stage, 0) + int(number)
    total = sum(counts.values()) or 1
    return {stage: n / total for stage, n in sorted(counts.items(), key=lambda kv: -kv[1])}


def start_profiler(pid: int, output: Path) -> subprocess.Popen[bytes] | None:
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        return None
    return subprocess.Popen(
        [str(spy), "record", "--pid", str(pid), "--gil", "--nonblocking", "--rate", "250",
         "--format", "raw", "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def run_shipper(
    es: Elasticsearch, paths: dict[str, Path], work: Path, events: int
) -> tuple[float, float, float, dict[str, float]]:
    """Seconds until every event is indexed, the shipper's CPU seconds (all, and the
    kernel's), and the share of its samples per stage (empty without py-spy)."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / "shipper.toml"
    port = free_ports(1)[0]
    sources = [
        {"name": name, "paths": [str(paths[name])], "parser": parser, "timezone": "UTC"}
        for name, parser in SOURCES
    ]
    elasticsearch = {
        "hosts": [es.url],
        "index_prefix": "shipper-logs",
        "replicas": 0,
        "retention_days": 0,
    }
    shipper = {
        "state_dir": str(work / "state"),
        "poll_interval": 0.05,
        "batch_max_events": 1000,
        "endpoint": {"port": port},
        "elasticsearch": elasticsearch,
        "sources": sources,
    }
    config.write_text(to_toml({"logging": {"level": "warning"}, "shipper": shipper}))
    byte_compile()
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "hubkeeper.cli", "ship-logs", "--config", str(config)],
        stdout=(work / "shipper.log").open("wb"), stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    profile = work / "profile.txt"
    profiler = start_profiler(process.pid, profile)
    try:
        wait_for(lambda: _caught_up(port, events), 3600, "the shipper", interval=0.5)
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(process.pid)
        kernel = cpu_seconds(process.pid, kernel=True)
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its samples and exits
            profiler.wait(60)
        process.terminate()
        process.wait(30)
    indexed = count(es, "shipper-logs-*")
    assert indexed == events, f"{indexed} documents for {events} events: lost or duplicated"
    return elapsed, cpu, kernel, stage_shares(profile) if profile.exists() else {}


def _caught_up(port: int, events: int) -> bool:
    """Every event read, and every byte of every file acknowledged (spool empty)."""
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except requests.RequestException:
        return False
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("hubkeeper_shipper_"):
            name = line.split("{")[0].split(" ")[0]
            values[name] = values.get(name, 0.0) + float(line.split()[-1])
    return (
        values.get("hubkeeper_shipper_events_read_total", 0) >= events
        and values.get("hubkeeper_shipper_lag_bytes", 1) == 0
        and values.get("hubkeeper_shipper_spool_bytes", 1) == 0
    )


RSYSLOG_CONF = """
global(workDirectory="{work}")
module(load="imfile" mode="inotify")
module(load="omelasticsearch")
template(name="doc" type="list" option.jsonf="on") {{
  property(outname="@timestamp" name="timegenerated" dateFormat="rfc3339" format="jsonf")
  property(outname="message" name="msg" format="jsonf")
  property(outname="service.name" name="syslogtag" format="jsonf")
}}
ruleset(name="ship") {{
  action(type="omelasticsearch" server="127.0.0.1" serverport="{port}" template="doc"
         searchIndex="rsyslog-bench" searchType="" bulkmode="on" maxbytes="5m"
         queue.type="LinkedList" queue.size="200000" queue.dequeueBatchSize="1000"
         action.resumeRetryCount="-1")
}}
{inputs}
"""


def run_rsyslog(
    es: Elasticsearch, paths: dict[str, Path], work: Path, lines: int
) -> tuple[float, float, float]:
    """Seconds until rsyslog has indexed every line, and its CPU seconds (all, and the
    kernel's)."""
    if not Path("/usr/lib/x86_64-linux-gnu/rsyslog/omelasticsearch.so").exists():
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "rsyslog", "rsyslog-elasticsearch"], check=True
        )
    work.mkdir(parents=True, exist_ok=True)
    inputs = "\n".join(
        f'input(type="imfile" File="{path}" Tag="{name}" ruleset="ship" freshStartTail="off")'
        for name, path in paths.items()
    )
    conf = work / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(work=work, port=es.port, inputs=inputs))
    started = time.monotonic()
    process = subprocess.Popen(
        ["rsyslogd", "-n", "-f", str(conf), "-i", str(work / "rsyslog.pid")],
        stdout=(work / "rsyslog.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: count(es, "rsyslog-bench") >= lines, 3600, "rsyslog", interval=1.0)
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(process.pid)
        kernel = cpu_seconds(process.pid, kernel=True)
    finally:
        process.terminate()
        process.wait(30)
    return elapsed, cpu, kernel


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hubkeeper-bench-shipping-"))
    es = Elasticsearch.create(heap="1g")
    figures: dict[str, Any] = {"lines": args.lines}
    try:
        paths, events = write_files(work, args.lines)
        figures["bytes"] = sum(p.stat().st_size for p in paths.values())
        figures["events"] = events
        cpu, _ = parse_only(paths, work / "parse")
        figures["parse_lines_per_s"] = round(args.lines / cpu)
        print(f"parse+serialize: {args.lines} lines ({events} events) in {cpu:.1f} CPU s: "
              f"{args.lines / cpu:,.0f} lines/s", flush=True)  # fmt: skip
        native, sources._native = sources._native, None
        try:
            python_cpu, _ = parse_only(paths, work / "parse-python")
        finally:
            sources._native = native
        figures["parse_python_path_lines_per_s"] = round(args.lines / python_cpu)
        print(f"  the same by the Python path alone (no native fast path): "
              f"{args.lines / python_cpu:,.0f} lines/s", flush=True)  # fmt: skip
        hostile_paths, _events = write_files(work / "hostile", args.lines, hostile=0.1)
        hostile_cpu, _ = parse_only(hostile_paths, work / "parse-hostile")
        figures["parse_hostile_lines_per_s"] = round(args.lines / hostile_cpu)
        figures["parse_hostile_slowdown"] = round(hostile_cpu / cpu, 2)
        print(
            f"parse+serialize, 10% hostile lines: {args.lines / hostile_cpu:,.0f} lines/s, "
            f"{hostile_cpu / cpu:.2f}x the ordinary mix's time (target <= 2)",
            flush=True,
        )
        _cpu, records = parse_only(paths, work / "ceiling", keep=True)
        es.start()
        warmup = [
            Record.of(r.key, r.start, r.resume, r.index.replace("ceiling", "warmup"), r.id,
                      r.source, r.doc)
            for r in records[:20000]
        ]  # fmt: skip
        bulk_ceiling(es, warmup)
        ceiling = bulk_ceiling(es, records)
        del records
        figures["ceiling_lines_per_s"] = round(args.lines / ceiling)
        print(
            f"bulk loader ceiling: {ceiling:.1f} s, {args.lines / ceiling:,.0f} lines/s", flush=True
        )
        shipped, shipper_cpu, kernel, shares = run_shipper(es, paths, work / "shipper", events)
        figures["shipper_lines_per_s"] = round(args.lines / shipped)
        figures["shipper_cpu_s_per_100k"] = round(shipper_cpu / args.lines * 100_000, 2)
        figures["shipper_kernel_cpu_s_per_100k"] = round(kernel / args.lines * 100_000, 2)
        figures["stages"] = {
            stage: {
                "share": round(share, 3),
                "cpu_s_per_100k": round(share * shipper_cpu / args.lines * 100_000, 3),
            }
            for stage, share in shares.items()
        }
        for stage, share in shares.items():
            per = share * shipper_cpu / args.lines * 100_000
            print(f"  {stage:12} {share:6.1%} {per:6.3f} CPU s per 100k lines", flush=True)
        figures["shipper_of_ceiling"] = round(ceiling / shipped, 3)
        print(f"ship-logs end to end: {shipped:.1f} s, {args.lines / shipped:,.0f} lines/s "
              f"({ceiling / shipped:.0%} of the ceiling), {shipper_cpu:.1f} CPU s "
              f"= {figures['shipper_cpu_s_per_100k']} per 100k lines", flush=True)  # fmt: skip
        rsyslog, rsyslog_cpu, kernel = run_rsyslog(es, paths, work / "rsyslog", args.lines)
        figures["rsyslog_kernel_cpu_s_per_100k"] = round(kernel / args.lines * 100_000, 2)
        figures["rsyslog_lines_per_s"] = round(args.lines / rsyslog)
        figures["rsyslog_cpu_s_per_100k"] = round(rsyslog_cpu / args.lines * 100_000, 2)
        per = figures["rsyslog_cpu_s_per_100k"]
        print(
            f"rsyslog end to end: {rsyslog:.1f} s, {args.lines / rsyslog:,.0f} lines/s, "
            f"{rsyslog_cpu:.1f} CPU s = {per} per 100k lines",
            flush=True,
        )
    except BaseException:
        print(f"kept {work} for a look", flush=True)
        raise
    else:
        shutil.rmtree(work, ignore_errors=True)
    finally:
        es.remove()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
