"""Bulk answers sorted by ``settle``, document records, and the buffering DocumentIndexer."""

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from hubkeeper.config import ShipperConfig, ShipperElasticsearchConfig
from hubkeeper.shippers.delivery import ItemResult, Outcome, Unavailable, error_reason, settle
from hubkeeper.shippers.documents import DocumentIndexer, document_record
from hubkeeper.shippers.parsers import iso_from_epoch
from hubkeeper.shippers.store import Record

CONFIG = ShipperElasticsearchConfig()
LOG_INDEX = "hubkeeper-logs-app-2024.02.29"
DEAD_INDEX = "hubkeeper-deadletter-2024.02.29"
T0 = datetime(2026, 11, 25, 10, 0, 0, 123000, tzinfo=UTC).timestamp()
STAMP, LATER = iso_from_epoch(T0), iso_from_epoch(T0 + 1)
REFUSAL = {"type": "mapper_parsing_exception", "reason": "failed to parse field [x]"}


def record(n: int, index: str = LOG_INDEX) -> Record:
    doc = json.dumps({"@timestamp": "2024-02-29T23:59:59.000Z", "message": f"m{n}"}).encode()
    return Record.of(f"k{n}", n * 10, n * 10 + 10, index, f"id{n}", "app", doc)


# --- settle ------------------------------------------------------------------------------


def test_settle_sorts_each_status() -> None:
    records = [record(n) for n in range(5)]
    statuses = [201, 409, 429, 503, 400]
    results = [ItemResult(s, REFUSAL if s == 400 else None) for s in statuses]
    settled = settle(records, results, CONFIG)
    assert settled.done == {Outcome.INDEXED: 1, Outcome.DUPLICATE: 1, Outcome.DEAD: 1}
    assert settled.retried
    assert settled.again[:2] == [records[2], records[3]]
    assert len(settled.again) == 3 and settled.refused == []
    assert settled.dead_lettered == [(records[4], error_reason(REFUSAL))]


def test_settle_without_retries_is_not_retried() -> None:
    settled = settle([record(0), record(1)], [ItemResult(200), ItemResult(409)], CONFIG)
    assert not settled.retried and settled.again == []
    assert settled.done == {Outcome.INDEXED: 1, Outcome.DUPLICATE: 1}


def test_a_refusal_becomes_a_dead_letter_of_the_same_day() -> None:
    original = record(7)
    settled = settle([original], [ItemResult(400, REFUSAL)], CONFIG)
    (dead,) = settled.again
    assert dead.index == DEAD_INDEX
    assert dead.id == original.id
    body = json.loads(dead.doc)
    assert body["event.original"] == original.doc.decode()
    assert body["error.type"] == "mapper_parsing_exception"
    assert body["labels.target_index"] == LOG_INDEX
    assert body["@timestamp"] == "2024-02-29T23:59:59.000Z"
    assert settled.done[Outcome.DEAD] == 1 and not settled.retried


def test_a_refused_dead_letter_is_given_up_and_not_counted() -> None:
    dead = record(1, index=DEAD_INDEX)
    settled = settle([dead], [ItemResult(400, REFUSAL)], CONFIG)
    assert settled.refused == [(dead, "mapper_parsing_exception: failed to parse field [x]")]
    assert settled.again == [] and settled.dead_lettered == []
    assert sum(settled.done.values()) == 0


def test_an_indexed_dead_letter_is_not_counted_again() -> None:
    settled = settle([record(1, index=DEAD_INDEX)], [ItemResult(201)], CONFIG)
    assert sum(settled.done.values()) == 0 and settled.again == [] and settled.refused == []


def test_error_reason() -> None:
    assert error_reason(None) == "unknown"
    assert error_reason({}) == "unknown"
    assert error_reason({"reason": "x" * 1000}) == "unknown: " + "x" * 300


# --- records and timestamps --------------------------------------------------------------


def test_document_record_index_id_and_body() -> None:
    doc = {
        "@timestamp": iso_from_epoch(T0),
        "event.dataset": "hubkeeper.containers",
        "user.name": "jü",
    }
    rec = document_record("hubkeeper-logs", "c1", doc)
    assert rec.index == "hubkeeper-logs-hubkeeper.containers-2026.11.25"
    assert rec.doc == json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    assert json.loads(rec.doc) == doc

    same = document_record("hubkeeper-logs", "c1", {**doc, "user.name": "other"})
    other_identity = document_record("hubkeeper-logs", "c2", doc)
    other_time = document_record("hubkeeper-logs", "c1", {**doc, "@timestamp": LATER})
    assert same.id == rec.id  # a re-sent document is a duplicate, whatever its figures
    assert len({rec.id, other_identity.id, other_time.id}) == 3


# --- DocumentIndexer ---------------------------------------------------------------------


class FakeOutput:
    """The outputs' interface; ``answer`` gives each record's status."""

    def __init__(self) -> None:
        self.down = False
        self.templates_down = False
        self.template_calls = 0
        self.bulk_calls = 0
        self.batches: list[list[Record]] = []
        self.answer: Callable[[Record], int] = lambda _record: 201

    def install_templates(self) -> None:
        self.template_calls += 1
        if self.templates_down:
            raise Unavailable("templates: no answer")

    def bulk(self, records: list[Record]) -> list[ItemResult]:
        self.bulk_calls += 1
        if self.down:
            raise Unavailable("bulk: no answer")
        self.batches.append(list(records))
        statuses = [self.answer(r) for r in records]
        return [ItemResult(s, REFUSAL if s == 400 else None) for s in statuses]

    def sent(self) -> list[str]:
        return [message(r) for batch in self.batches for r in batch]


def message(rec: Record) -> str:
    return json.loads(rec.doc)["message"]


def docs(*numbers: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            f"doc{n}",
            {
                "@timestamp": iso_from_epoch(T0),
                "event.dataset": "hubkeeper.test",
                "message": f"d{n}",
            },
        )
        for n in numbers
    ]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def indexer(
    registry: CollectorRegistry, section: ShipperConfig | None = None
) -> tuple[DocumentIndexer, FakeOutput]:
    made = DocumentIndexer(section or ShipperConfig(), registry, "test_docs")
    fake = FakeOutput()
    made.delivery.output = fake
    return made, fake


def count(registry: CollectorRegistry, outcome: str) -> float | None:
    return registry.get_sample_value("test_docs_documents_total", {"outcome": outcome})


def buffered(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("test_docs_buffered_documents")


def test_adding_does_not_touch_the_output(registry: CollectorRegistry) -> None:
    docs_indexer, fake = indexer(registry)
    docs_indexer.add(docs(0, 1))
    assert fake.template_calls == 0 and fake.bulk_calls == 0 and buffered(registry) == 2


def test_documents_are_indexed_and_counted(registry: CollectorRegistry) -> None:
    docs_indexer, fake = indexer(registry)
    fake.answer = lambda r: 409 if message(r) == "d1" else 201
    docs_indexer.add(docs(0, 1, 2))
    docs_indexer.flush()
    assert fake.sent() == ["d0", "d1", "d2"] and fake.template_calls == 1
    assert count(registry, "indexed") == 2
    assert count(registry, "duplicate") == 1
    assert count(registry, "dropped") == 0
    assert buffered(registry) == 0
    assert fake.batches[0][0].index == "hubkeeper-logs-hubkeeper.test-2026.11.25"
    docs_indexer.add(docs(3))
    docs_indexer.flush()
    assert fake.template_calls == 1 and fake.sent()[-1] == "d3"  # templates installed once


def test_documents_wait_while_the_output_is_unavailable(registry: CollectorRegistry) -> None:
    docs_indexer, fake = indexer(registry)
    fake.down = True
    docs_indexer.add(docs(0, 1))
    docs_indexer.flush()
    docs_indexer.add(docs(2))
    docs_indexer.flush()
    assert buffered(registry) == 3 and fake.batches == []
    assert count(registry, "indexed") == 0
    fake.down = False
    docs_indexer.add(docs(3))
    docs_indexer.flush()
    assert fake.sent() == ["d0", "d1", "d2", "d3"]
    assert buffered(registry) == 0 and count(registry, "indexed") == 4


def test_a_failed_batch_goes_back_before_documents_added_meanwhile(
    registry: CollectorRegistry,
) -> None:
    docs_indexer, fake = indexer(registry)
    docs_indexer.add(docs(0, 1))
    real_bulk = fake.bulk

    def measured_during_the_request(records: list[Record]) -> list[ItemResult]:
        docs_indexer.add(docs(2))  # the measuring job runs while the request hangs
        raise Unavailable("timeout")

    fake.bulk = measured_during_the_request  # type: ignore[method-assign]
    docs_indexer.flush()
    assert buffered(registry) == 3
    fake.bulk = real_bulk  # type: ignore[method-assign]
    docs_indexer.flush()
    assert fake.sent() == ["d0", "d1", "d2"]


def test_templates_are_installed_before_anything_is_sent(registry: CollectorRegistry) -> None:
    docs_indexer, fake = indexer(registry)
    fake.templates_down = True
    docs_indexer.add(docs(0, 1))
    docs_indexer.flush()
    assert fake.template_calls == 1 and fake.bulk_calls == 0 and buffered(registry) == 2
    fake.templates_down = False
    docs_indexer.flush()
    assert fake.template_calls == 2 and fake.sent() == ["d0", "d1"]
    assert buffered(registry) == 0


def test_too_many_requests_keeps_the_records_for_the_next_flush(
    registry: CollectorRegistry,
) -> None:
    docs_indexer, fake = indexer(registry)
    fake.answer = lambda r: 429 if message(r) == "d1" else 201
    docs_indexer.add(docs(0, 1, 2))
    docs_indexer.flush()
    assert fake.bulk_calls == 1 and buffered(registry) == 1
    assert count(registry, "indexed") == 2
    docs_indexer.add(docs(3))
    docs_indexer.flush()
    assert fake.bulk_calls == 2  # the retried record went first, and again no busy loop
    assert [message(r) for r in fake.batches[1]] == ["d1", "d3"]
    assert buffered(registry) == 1
    fake.answer = lambda _r: 201
    docs_indexer.flush()
    assert [message(r) for r in fake.batches[2]] == ["d1"]
    assert buffered(registry) == 0 and count(registry, "indexed") == 4


def test_a_refusal_is_dead_lettered_in_the_same_flush(registry: CollectorRegistry) -> None:
    docs_indexer, fake = indexer(registry)

    def answer(rec: Record) -> int:
        return 400 if rec.index.startswith("hubkeeper-logs-") and message(rec) == "d1" else 201

    fake.answer = answer
    docs_indexer.add(docs(0, 1, 2))
    docs_indexer.flush()
    assert fake.bulk_calls == 2
    (dead,) = fake.batches[1]
    assert dead.index == "hubkeeper-deadletter-2026.11.25"
    assert json.loads(json.loads(dead.doc)["event.original"])["message"] == "d1"
    assert count(registry, "indexed") == 2 and count(registry, "dead_lettered") == 1
    assert buffered(registry) == 0


def test_the_oldest_documents_are_dropped_past_the_configured_bound(
    registry: CollectorRegistry,
) -> None:
    docs_indexer, fake = indexer(registry, ShipperConfig(documents_buffer=5))
    fake.down = True
    docs_indexer.add(docs(0, 1, 2))
    docs_indexer.flush()
    assert count(registry, "dropped") == 0
    docs_indexer.add(docs(3, 4, 5, 6))
    docs_indexer.flush()
    assert buffered(registry) == 5 and count(registry, "dropped") == 2
    fake.down = False
    docs_indexer.flush()
    assert fake.sent() == ["d2", "d3", "d4", "d5", "d6"]


def test_batches_hold_at_most_batch_max_events(registry: CollectorRegistry) -> None:
    section = dataclasses.replace(ShipperConfig(), batch_max_events=2)
    docs_indexer, fake = indexer(registry, section)
    docs_indexer.add(docs(0, 1, 2, 3, 4))
    docs_indexer.flush()
    assert [[message(r) for r in batch] for batch in fake.batches] == [
        ["d0", "d1"],
        ["d2", "d3"],
        ["d4"],
    ]
    assert count(registry, "indexed") == 5 and buffered(registry) == 0
