"""``hubkeeper ship-logs``: read sources into the spool, deliver the spool, report.

Two threads: the reader scans and reads files into the spool (it stops reading while the
spool is full, or its filesystem); the sender delivers spooled records in batches and
commits offsets after acknowledgement. Metrics ``hubkeeper_shipper_*`` on ``/metrics``,
a PRTG sensor on ``/prtg/shipper``, JSON logs on stdout.
"""

from __future__ import annotations

import gc
import socket
import threading
import time
from collections import Counter as Counts
from collections.abc import Iterable
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hubkeeper import prtg
from hubkeeper.config import Config, LabelsConfig, parse_byte_size
from hubkeeper.endpoint import Response
from hubkeeper.files import LockHeld, try_lock
from hubkeeper.log import get_logger
from hubkeeper.redact import Redactor
from hubkeeper.shippers.delivery import (
    Delivery,
    Outcome,
    Settled,
    Unavailable,
    make_output,
    retry_until,
)
from hubkeeper.shippers.parsers import now_iso
from hubkeeper.shippers.sources import (
    DEFAULT_DOCKER_ROOT,
    ContainerInfo,
    Files,
    Settings,
    make_sources,
    use_docker_root,
)
from hubkeeper.shippers.store import (
    Record,
    Registry,
    Spool,
    Unwritable,
    commit,
    upgrade_spool,
)

log = get_logger(__name__)
READ_BUDGET = 256 << 10  # input bytes per reader cycle (its records stay in the caches)
STATUS_DATASET = "hubkeeper.shipper"
COMMIT_INTERVAL = 1.0  # seconds between registry writes while batches keep coming
GC_YOUNG = 50_000  # allocations between collections of the young generation (Python: 700)


def collect_less() -> None:
    """Run the cyclic garbage collector less often: the pipeline makes a few containers
    per line (a document, an event, a record), nearly all freed by reference counting,
    and a young-generation collection every 700 of them took about 15% of its CPU. What
    exists already (modules, configuration) is frozen out of the collector's sight."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG, 10, 10)


class WriteTrouble:
    """Which writes to the state folder (``spool``, ``registry``) fail, since when and why:
    a failure starts an episode, the next success of the same write ends it."""

    def __init__(self) -> None:
        self.failing: dict[str, tuple[float, str, int]] = {}  # since, last error, failures
        self.lock = threading.Lock()

    def failed(self, what: str, error: str, now: float) -> bool:
        """Record a failure; True if it starts an episode."""
        with self.lock:
            since, _error, count = self.failing.get(what, (now, "", 0))
            self.failing[what] = (since, error, count + 1)
            return count == 0

    def succeeded(self, what: str, now: float) -> tuple[float, int] | None:
        """Record a success; the episode's seconds and failures if it ends one."""
        with self.lock:
            episode = self.failing.pop(what, None)
        return None if episode is None else (now - episode[0], episode[2])


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "hubkeeper_shipper_events_total",
            "Events by delivery outcome (indexed, duplicate, dead_lettered; retried: answered "
            "429/5xx or refused by an index block and sent again, counted each time).",
            ["outcome"],
            registry=registry,
        )
        self.counts = dict.fromkeys(Outcome, 0)  # for the PRTG sensor
        for kind in Outcome:
            self.events.labels(kind.value)
        self.read = Counter(
            "hubkeeper_shipper_events_read_total", "Events read into the spool.", ["source"],
            registry=registry,
        )  # fmt: skip
        self.parse_failures = Counter(
            "hubkeeper_shipper_parse_failures_total",
            "Events shipped raw (unknown_format, parser_error, json_too_deep, encode_error) "
            "or with the time they were read (timestamp_invalid), by reason.",
            ["source", "reason"],
            registry=registry,
        )
        self.read_failures = Counter(
            "hubkeeper_shipper_read_failures_total",
            "Failed reads of a file (I/O errors); it is read again after a pause.",
            ["source"],
            registry=registry,
        )
        self.request_failures = Counter(
            "hubkeeper_shipper_request_failures_total",
            "Bulk requests that failed as a whole (no answer, 429, 5xx).",
            registry=registry,
        )
        self.blocked = Counter(
            "hubkeeper_shipper_events_blocked_total",
            "Events Elasticsearch refused because of an index block and that are sent again "
            "(also counted as retried), by block: flood_stage (a node past its flood-stage "
            "disk watermark), other (a block an operator set).",
            ["block"],
            registry=registry,
        )
        for name in ("flood_stage", "other"):
            self.blocked.labels(name)
        self.write_failures = Counter(
            "hubkeeper_shipper_spool_write_failures_total",
            "Failed writes to the state folder (filesystem full, over quota, I/O error), by "
            "what (spool: reading pauses; registry: offsets and spool space wait). Each is "
            "made again later, nothing is lost unless a file is rotated away meanwhile.",
            ["what"],
            registry=registry,
        )
        for what in ("spool", "registry"):
            self.write_failures.labels(what)
        self.dead_letter_failures = Counter(
            "hubkeeper_shipper_dead_letter_failures_total",
            "Events the dead-letter index refused too (logged, then given up).",
            registry=registry,
        )
        self.batch = Histogram(
            "hubkeeper_shipper_batch_duration_seconds",
            "Duration of one bulk request.",
            registry=registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )

    def count(self, settled: Settled) -> None:
        """Count a bulk answer's items by outcome, those sent again as retried."""
        for kind, number in (*settled.done.items(), (Outcome.RETRY, settled.retried)):
            self.events.labels(kind.value).inc(number)
            self.counts[kind] += number
        for name, number in settled.blocked.items():
            self.blocked.labels(name).inc(number)


class Shipper:
    """The pipeline of one ``[shipper]`` section."""

    def __init__(self, config: Config, container_info: ContainerInfo | None = None) -> None:
        section = config.shipper
        self.config = config
        self.section = section
        self.host_name = section.host_name or socket.gethostname()
        self._reported: dict[Outcome, int] = {}
        state = Path(section.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        self._lock = try_lock(state / "lock")  # one shipper per state folder
        if self._lock is None:
            raise LockHeld(f"another shipper uses {state}")
        self.registry = Registry(state / "registry.json")
        # The reader's chunks are at most a quarter of a batch's limits: the sender, which
        # takes whole chunks, fills a batch to three quarters at least while more waits.
        chunk = max(1, section.batch_max_events // 4), parse_byte_size(section.batch_max_bytes) // 4
        upgrade_spool(state / "spool", self.registry, *chunk)
        self.spool = Spool(
            state / "spool", parse_byte_size(section.spool_max_bytes), self.registry.cursor,
            chunk_events=chunk[0], chunk_bytes=chunk[1],
        )  # fmt: skip
        spooled = self.spool.offsets(self.registry.cursor)
        docker_sources = any(source.type == "docker" for source in section.sources)
        if container_info is None and docker_sources:
            container_info = docker_lookup(config.docker.url, config.labels, config.jupyterhub.name)
        settings = Settings(
            fingerprint_bytes=section.fingerprint_bytes,
            max_event_bytes=parse_byte_size(section.max_event_bytes),
            multiline_timeout=section.multiline_timeout,
            close_inactive=section.close_inactive,
            host_name=self.host_name,
            index_prefix=section.elasticsearch.index_prefix,
            redactor=Redactor(config.logging.secret_words),
        )
        root = docker_root(config.docker.url) if docker_sources else None
        # an engine restarting now answers later: its data root is asked again while reading
        self._docker_root_unknown = docker_sources and root is None
        self._docker_root_asked = time.monotonic()
        if self._docker_root_unknown:
            log.warning("docker_root_unknown", meanwhile=DEFAULT_DOCKER_ROOT)
        self.files = Files(
            make_sources(section.sources, root), self.registry, settings, spooled, container_info
        )
        self.output = make_output(section)
        self.metrics_registry = CollectorRegistry()
        self.metrics = Metrics(self.metrics_registry)
        self.metrics_registry.register(_StateCollector(self))
        self.stopping = threading.Event()
        self.delivery = Delivery(
            self.output, section.elasticsearch,
            retry_until(self.stopping, section.retry_backoff, section.retry_backoff_max),
            on_unavailable=self._unavailable, on_answer=self._answered,
            timer=self.metrics.batch.time,
        )  # fmt: skip
        self.last_ack: float | None = None
        self._committed_at = 0.0
        self.unavailable_since: float | None = None
        self.blocked = False  # the last answer had items refused by an index block
        self.write_trouble = WriteTrouble()
        self._threads: list[threading.Thread] = []

    # --- threads -------------------------------------------------------------------------

    def start(self) -> None:
        for target, name in ((self._read_loop, "reader"), (self._send_loop, "sender")):
            thread = threading.Thread(target=target, name=f"shipper-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        with self.spool.changed:
            self.spool.changed.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self.files.close()
        self.spool.close()

    def alive(self) -> bool:
        return all(thread.is_alive() for thread in self._threads)

    def _read_loop(self) -> None:
        next_scan = 0.0
        while not self.stopping.is_set():
            try:
                if time.monotonic() >= next_scan:
                    self._ask_docker_root()
                    self.files.scan()
                    next_scan = time.monotonic() + self.section.scan_interval
                room = self.spool.max_bytes - self.spool.used()
                if room <= 0:
                    self.stopping.wait(self.section.poll_interval)
                    continue
                records, moves = self.files.read(min(READ_BUDGET, room))
                self.spool.append(records)
                self._wrote("spool")  # or nothing left to write (a file gone meanwhile)
                self.files.advance(moves)
                self._count_read(records)
                if not records:
                    self.stopping.wait(self.section.poll_interval)
            except Unwritable as error:  # not advanced: read again at the next try
                self._write_failed(error)
                self.stopping.wait(self.section.poll_interval)
            except Exception:
                log.exception("reader_failed")
                self.stopping.wait(1.0)

    def _ask_docker_root(self) -> None:
        """The engine's data root, asked every few seconds until it answers."""
        if not self._docker_root_unknown or time.monotonic() < self._docker_root_asked + 5:
            return
        self._docker_root_asked = time.monotonic()
        root = docker_root(self.config.docker.url, timeout=2)
        if root is not None:
            use_docker_root(self.files.sources, root)
            self._docker_root_unknown = False
            log.info("docker_root_found", root=root)

    def _count_read(self, records: list[Record]) -> None:
        files = self.files
        for source, number in Counts(map(attrgetter("source"), records)).items():
            self.metrics.read.labels(source).inc(number)
        for (source, reason), number in files.line_failures.items():
            self.metrics.parse_failures.labels(source, reason).inc(number)
        for source, number in files.read_failures.items():
            self.metrics.read_failures.labels(source).inc(number)
        files.line_failures.clear()
        files.read_failures.clear()

    def _send_loop(self) -> None:
        cursor = self.registry.cursor
        waiting_since: float | None = None
        section = self.section
        max_bytes = parse_byte_size(section.batch_max_bytes)
        if self.delivery.install_templates():  # else stopping
            log.info("index_templates_installed")
        while not self.stopping.is_set():
            try:
                records, after = self.spool.read(cursor, section.batch_max_events, max_bytes)
            except Exception:
                log.exception("spool_read_failed")
                self.stopping.wait(1.0)
                continue
            if not records:
                waiting_since = None
                self._commit()
                self.spool.wait(cursor, self.section.poll_interval)
                continue
            now = time.monotonic()
            waiting_since = waiting_since or now
            # short: under the limits, and no chunk left that did not fit
            short = (
                len(records) < section.batch_max_events
                and records.size < max_bytes
                and after == self.spool.end()
            )
            if short and now - waiting_since < section.batch_max_wait:
                self.spool.wait(after, section.batch_max_wait - (now - waiting_since))
                continue
            waiting_since = None
            if self.delivery.send(records):
                break  # stopping: unacknowledged records are sent again after a restart
            self.registry.acknowledge(records.offsets(), after)
            cursor = after
            self.last_ack = time.time()
            if time.monotonic() - self._committed_at >= COMMIT_INTERVAL:
                self._commit()
        self._commit()

    def _commit(self) -> None:
        """Write the acknowledged offsets and cursor (one atomic write), then delete the
        spool segments behind the cursor. Done at most every COMMIT_INTERVAL while busy:
        a crash in between only sends acknowledged events again (answered 409). While
        registry writes fail, every commit tries one (its success ends the episode)."""
        if self.registry.dirty or "registry" in self.write_trouble.failing:
            try:
                commit(self.registry, self.spool)
            except Unwritable as error:  # still dirty: written at the next commit
                self._write_failed(error)
            else:
                self._wrote("registry")
        self._committed_at = time.monotonic()

    def _write_failed(self, error: Unwritable) -> None:
        self.metrics.write_failures.labels(error.what).inc()
        if self.write_trouble.failed(error.what, str(error)[:300], time.time()):
            log.error(
                "spool_unwritable", what=error.what, state_dir=self.section.state_dir,
                error=str(error)[:300],
            )  # fmt: skip

    def _wrote(self, what: str) -> None:
        ended = self.write_trouble.succeeded(what, time.time())
        if ended is not None:
            log.info("spool_writable_again", what=what, seconds=round(ended[0], 1),
                     failures=ended[1])  # fmt: skip

    def _unavailable(self, error: Unavailable, attempt: int) -> None:
        self.metrics.request_failures.inc()
        if self.unavailable_since is None:
            self.unavailable_since = time.time()
        log.warning(
            "output_unavailable",
            output=self.section.output,
            error=str(error)[:500],
            attempt=attempt,
        )

    def _answered(self, settled: Settled) -> None:
        self.unavailable_since = None
        if bool(settled.blocked) != self.blocked:  # logged when it starts and ends
            self.blocked = bool(settled.blocked)
            if self.blocked:
                log.warning("index_blocked", blocks=sorted(settled.blocked), retried=True)
            else:
                log.info("index_block_lifted")
        for record, reason in settled.refused:
            self.metrics.dead_letter_failures.inc()
            log.error("dead_letter_refused", id=record.id, error=reason)
        for record, reason in settled.dead_lettered:
            log.warning(
                "event_dead_lettered", index=record.index, id=record.id,
                source=record.source, error=reason,
            )  # fmt: skip
        self.metrics.count(settled)

    # --- reports -------------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        """Unhealthy only when a thread stopped; degraded (still healthy: the rest ships)
        while the output does not answer, the state folder cannot be written or a source
        has a file it cannot read."""
        if not self.alive():
            return False, "a shipper thread stopped\n"
        problems = [f"source {name}: {why}" for name, why in sorted(self.files.failing().items())]
        now = time.time()
        for what, (since, error, _count) in sorted(self.write_trouble.failing.copy().items()):
            problems.insert(0, f"{what} not writable for {now - since:.0f}s ({error})")
        if self.unavailable_since is not None:
            down = time.time() - self.unavailable_since
            problems.insert(0, f"{self.section.output} unavailable for {down:.0f}s")
        return True, ("degraded: " + "; ".join(problems) if problems else "ok") + "\n"

    def lag(self) -> dict[str, tuple[int, float, int]]:
        """Per source: bytes behind, seconds behind (at most), open files."""
        now = time.monotonic()
        result: dict[str, tuple[int, float, int]] = {
            s.name: (0, 0.0, 0) for s in self.files.sources
        }
        for tail in list(self.files.tails.values()):
            behind = max(0, tail.size - tail.entry.acked)
            seconds = tail.lag_seconds(now)
            old_bytes, old_seconds, files = result[tail.source.name]
            result[tail.source.name] = (old_bytes + behind, max(old_seconds, seconds), files + 1)
        return result

    def status(self) -> tuple[str, dict[str, Any]]:
        """The status document: lag, spool, and outcomes since the previous one."""
        lag = self.lag().values()
        counts = dict(self.metrics.counts)
        since = {kind: counts[kind] - self._reported.get(kind, 0) for kind in Outcome}
        self._reported = counts
        used = self.spool.used()
        document = {
            "@timestamp": now_iso(),
            "event.dataset": STATUS_DATASET,
            "event.kind": "metric",
            "service.name": "hubkeeper-shipper",
            "host.name": self.host_name,
            "hubkeeper.shipper.lag.bytes": sum(b for b, _s, _f in lag),
            "hubkeeper.shipper.lag.seconds": round(max((s for _b, s, _f in lag), default=0.0), 3),
            "hubkeeper.shipper.spool.bytes": used,
            "hubkeeper.shipper.spool.pct_of_limit": round(100.0 * used / self.spool.max_bytes, 3),
            "hubkeeper.shipper.output.up": self.unavailable_since is None,
            **{f"hubkeeper.shipper.events.{kind.value}": n for kind, n in since.items()},
        }
        return self.host_name, document

    def prtg_route(self, path: str, _query: dict[str, list[str]]) -> Response:
        if path.rstrip("/") != "/prtg/shipper":
            return 404, "text/plain; charset=utf-8", b"not found\n"
        if not self.alive():
            return prtg.response(prtg.error("log shipper: a thread stopped"))
        lag = self.lag()
        total_bytes = sum(b for b, _s, _f in lag.values())
        worst = max((s for _b, s, _f in lag.values()), default=0.0)
        used = self.spool.used()
        percent = 100.0 * used / self.spool.max_bytes
        count = self.metrics.counts
        channels = [
            prtg.channel("Lag", total_bytes, "BytesFile"),
            prtg.channel("Lag time", float(worst), "TimeSeconds",
                         limits=prtg.Limits(max_warning=60, max_error=600)),
            prtg.channel("Spool", used, "BytesDisk"),
            prtg.channel("Spool used", percent, "Percent",
                         limits=prtg.Limits(max_warning=50, max_error=90)),
            prtg.channel("Indexed", int(count[Outcome.INDEXED]), mode="Difference"),
            prtg.channel("Duplicates", int(count[Outcome.DUPLICATE]), mode="Difference"),
            prtg.channel("Retried", int(count[Outcome.RETRY]), mode="Difference"),
            prtg.channel("Dead letters", int(count[Outcome.DEAD]), mode="Difference",
                         limits=prtg.Limits(max_warning=0)),
            prtg.channel("Open files", sum(f for _b, _s, f in lag.values())),
        ]  # fmt: skip
        _healthy, text = self.health()
        return prtg.response(prtg.sensor(channels, f"log shipper: {text.strip()}"))

    def retention(self) -> None:
        if self.section.output != "elasticsearch" or self.section.elasticsearch.retention_days <= 0:
            return
        try:
            deleted = self.output.delete_expired(datetime.now(UTC).date())
        except Unavailable as error:
            log.warning("retention_failed", error=str(error)[:500])  # tried again in an hour
            return
        if deleted:
            log.info("indices_deleted", indices=deleted)


class _StateCollector(Collector):
    """Gauges read from the pipeline at scrape time (sources that vanish, vanish)."""

    def __init__(self, shipper: Shipper) -> None:
        self.shipper = shipper

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        lag_bytes = GaugeMetricFamily(
            "hubkeeper_shipper_lag_bytes",
            "Bytes written but not yet acknowledged.",
            labels=["source"],
        )
        lag_seconds = GaugeMetricFamily(
            "hubkeeper_shipper_lag_seconds",
            "Age of the oldest line written but not yet acknowledged (since first seen).",
            labels=["source"],
        )
        files = GaugeMetricFamily("hubkeeper_shipper_files", "Files open.", labels=["source"])
        failing = GaugeMetricFamily(
            "hubkeeper_shipper_source_failing",
            "1 while a file of the source cannot be read (the others are read on).",
            labels=["source"],
        )
        broken = self.shipper.files.failing()
        for source, (behind, seconds, count) in self.shipper.lag().items():
            lag_bytes.add_metric([source], behind)
            lag_seconds.add_metric([source], seconds)
            files.add_metric([source], count)
            failing.add_metric([source], 1 if source in broken else 0)
        spool = self.shipper.spool
        yield from (lag_bytes, lag_seconds, files, failing)
        yield GaugeMetricFamily(
            "hubkeeper_shipper_spool_bytes",
            "Spooled bytes not yet acknowledged.",
            value=spool.used(),
        )
        yield GaugeMetricFamily(
            "hubkeeper_shipper_spool_limit_bytes", "Spool size limit.", value=spool.max_bytes
        )
        up = GaugeMetricFamily(
            "hubkeeper_shipper_output_up", "1 if the last request to the output succeeded."
        )
        up.add_metric([], 0 if self.shipper.unavailable_since else 1)
        yield up
        yield GaugeMetricFamily(
            "hubkeeper_shipper_spool_writable",
            "0 while the last write to the spool or the registry failed (filesystem full).",
            value=0 if self.shipper.write_trouble.failing else 1,
        )
        if self.shipper.last_ack is not None:
            yield GaugeMetricFamily(
                "hubkeeper_shipper_last_ack_timestamp_seconds",
                "When a batch was last acknowledged.",
                value=self.shipper.last_ack,
            )


def docker_lookup(url: str, labels: LabelsConfig, hub: str) -> ContainerInfo:
    """Container fields of a user-server container of the hub ``hub`` by id (None for
    other containers)."""
    import docker  # only for container sources: its import takes a tenth of a CPU second
    import docker.errors

    clients: list[docker.DockerClient] = []

    def look(container_id: str) -> dict[str, str] | None:
        if not clients:
            clients.append(docker.DockerClient(base_url=url, timeout=10))
        try:
            attrs = clients[0].api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        found = attrs["Config"].get("Labels") or {}
        if labels.user not in found or found.get(labels.hub) != hub:
            return None
        return {
            "container.id": attrs["Id"],
            "container.name": attrs["Name"].lstrip("/"),
            "container.image.name": found.get(labels.image) or attrs["Config"]["Image"],
            "user.name": found[labels.user],
            "labels.jupyterhub_user": found[labels.user],
            "labels.jupyterhub_server": found.get(labels.server, ""),
            "labels.hub": found.get(labels.hub, ""),
        }

    return look


def docker_root(url: str, timeout: float = 10) -> str | None:
    """The engine's data root (where its containers' logs are), None if it does not answer."""
    import docker
    import docker.errors
    import requests

    try:
        client = docker.DockerClient(base_url=url, timeout=timeout)
        return str(client.info()["DockerRootDir"])
    except (docker.errors.DockerException, requests.RequestException):
        return None
