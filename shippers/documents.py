"""Documents a daemon writes about itself (container snapshots, the shipper's status),
indexed through the shipper's configured output (``[shipper]``: Elasticsearch or Logstash).

They are measurements taken every few seconds, not log lines: while the output does not
answer they wait in a bounded buffer (``[shipper] documents_buffer``) and go out with the
next ones; past the bound the oldest are dropped and counted. Ids are deterministic
(dataset, identity, timestamp), so a document sent twice is indexed once; a permanent
refusal goes to the dead-letter index like any event.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from hubkeeper.config import ShipperConfig
from hubkeeper.daemon import Daemon
from hubkeeper.log import get_logger
from hubkeeper.shippers.delivery import (
    Delivery,
    Outcome,
    Settled,
    Unavailable,
    make_output,
    next_round,
)
from hubkeeper.shippers.ecs import ECS_VERSION
from hubkeeper.shippers.parsers import to_json
from hubkeeper.shippers.store import Record, daily_index

log = get_logger(__name__)

Documents = Iterable[tuple[str, dict[str, Any]]]


def document_record(index_prefix: str, identity: str, doc: dict[str, Any]) -> Record:
    """A spool-style record of one document (given ``ecs.version``); its dataset and
    timestamp name the index."""
    doc.setdefault("ecs.version", ECS_VERSION)
    dataset, stamp = str(doc["event.dataset"]), str(doc["@timestamp"])
    body = to_json(doc)
    event_id = hashlib.blake2b(f"{dataset}\0{identity}\0{stamp}".encode(), digest_size=12)
    return Record.of(
        dataset, 0, 0, daily_index(index_prefix, dataset, stamp), event_id.hexdigest(),
        dataset, body,
    )  # fmt: skip


class DocumentIndexer:
    """A bounded buffer of documents, sent in batches of ``batch_max_events``.

    Measuring (:meth:`add`) and sending (:meth:`flush`) run as separate daemon jobs, so an
    output that hangs never delays a measurement: the figures taken during an outage are
    the ones ops want to see after it.
    """

    def __init__(self, section: ShipperConfig, registry: CollectorRegistry, metric: str) -> None:
        self.section = section
        self.delivery = Delivery(
            make_output(section), section.elasticsearch, next_round,
            on_unavailable=self._unavailable, on_answer=self._answered,
        )  # fmt: skip
        self.buffer: deque[Record] = deque()
        self._lock = threading.Lock()
        self.unavailable = False
        self.documents = Counter(
            f"{metric}_documents_total",
            "Documents by outcome (indexed, duplicate, dead_lettered; dropped: the buffer "
            "was full while the output did not answer).",
            ["outcome"],
            registry=registry,
        )
        for name in (*(o.value for o in Outcome if o is not Outcome.RETRY), "dropped"):
            self.documents.labels(name)
        Gauge(
            f"{metric}_buffered_documents",
            "Documents waiting for the output.",
            registry=registry,
        ).set_function(lambda: len(self.buffer))

    def schedule(
        self, daemon: Daemon, seconds: float, measure: Callable[[], Documents], name: str
    ) -> None:
        """Measure every ``seconds`` (job ``name``) and send every ``seconds`` (its own job)."""
        daemon.every(seconds, lambda: self.add(measure()), name)
        daemon.every(seconds, self.flush, f"{name}-send")

    def add(self, documents: Documents) -> None:
        """Buffer ``(identity, document)`` pairs."""
        prefix = self.section.elasticsearch.index_prefix
        records = [document_record(prefix, key, doc) for key, doc in documents]
        self._put(records, at_end=True)

    def flush(self) -> None:
        """Send what is buffered until the output fails or answers 429/5xx for some of it
        (then the rest waits for the next flush)."""
        if not self.delivery.install_templates():
            return
        while batch := self._take(self.section.batch_max_events):
            try:
                left = self.delivery.send(batch)
            except BaseException:
                self._put(batch, at_end=False)
                raise
            if left:
                self._put(left, at_end=False)
                return

    def _unavailable(self, error: Unavailable, _attempt: int) -> None:
        """Logged once per outage: a flush runs every few seconds."""
        if not self.unavailable:
            log.warning(
                "documents_output_unavailable", output=self.section.output,
                error=str(error)[:300], buffered=len(self.buffer),
            )  # fmt: skip
        self.unavailable = True

    def _answered(self, settled: Settled) -> None:
        for kind, number in settled.done.items():
            self.documents.labels(kind.value).inc(number)
        for record, reason in settled.dead_lettered + settled.refused:
            log.warning("document_refused", index=record.index, error=reason)
        if self.unavailable:
            log.info("documents_output_back", output=self.section.output)
        self.unavailable = False

    def _take(self, count: int) -> list[Record]:
        with self._lock:
            return [self.buffer.popleft() for _ in range(min(count, len(self.buffer)))]

    def _put(self, records: list[Record], at_end: bool) -> None:
        """Put records in the buffer (new ones at the end, unsent ones back in front);
        beyond ``documents_buffer`` the oldest are dropped."""
        with self._lock:
            if at_end:
                self.buffer.extend(records)
            else:
                self.buffer.extendleft(reversed(records))
            dropped = len(self.buffer) - self.section.documents_buffer
            for _ in range(max(dropped, 0)):
                self.buffer.popleft()
        if dropped > 0:
            self.documents.labels("dropped").inc(dropped)
            log.warning("documents_dropped", count=dropped, buffered=len(self.buffer))
