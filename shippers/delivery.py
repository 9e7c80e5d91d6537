"""The delivery contract every output adapter serves (Elasticsearch, Logstash), and the
one settle-and-retry loop above it, used by the log pipeline and the document indexer.

An output sends a batch and answers a result per record. Each result is done (2xx, 409),
to be sent again (429, 5xx, an index block such as the flood-stage disk watermark's), or a
permanent refusal (other 4xx) that becomes a dead letter: a record for the dead-letter
index of the same day, carrying the original document and the error. A request that fails
as a whole raises :class:`Unavailable`.
"""

from __future__ import annotations

import enum
import re
import threading
from collections import Counter as Counts
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

from hubkeeper.backoff import full_jitter
from hubkeeper.config import ShipperConfig, ShipperElasticsearchConfig
from hubkeeper.redact import redact
from hubkeeper.shippers.ecs import ECS_VERSION
from hubkeeper.shippers.parsers import to_json
from hubkeeper.shippers.store import Batch, Record


class Outcome(enum.Enum):
    INDEXED = "indexed"
    DUPLICATE = "duplicate"
    RETRY = "retried"
    DEAD = "dead_lettered"


def outcome(status: int, error: dict[str, Any] | None = None) -> Outcome:
    """What one bulk item's answer means: done (2xx, 409), try again (429, 5xx, an index
    block), or a permanent refusal (other 4xx) that goes to the dead-letter index."""
    if 200 <= status < 300:
        return Outcome.INDEXED
    if status == 409:
        return Outcome.DUPLICATE
    if status == 429 or status >= 500 or block(error) is not None:
        return Outcome.RETRY
    return Outcome.DEAD


#: The block Elasticsearch puts on every index of a node past its flood-stage disk
#: watermark (``index.blocks.read_only_allow_delete``, id 12): 429 TOO_MANY_REQUESTS/12 on
#: 8.19 and 9.2 here, 403 FORBIDDEN/12 on older versions (elastic/elasticsearch#49393:
#: clients took the 403 for a refusal and dropped data). Lifted by itself below the high
#: watermark.
FLOOD_STAGE_BLOCK = 12
_BLOCK_IDS = re.compile(r"\b[A-Z_]+/(\d+)/")  # "blocked by: [TOO_MANY_REQUESTS/12/disk ..."


def block(error: dict[str, Any] | None) -> str | None:
    """The index or cluster block that refused an item (``cluster_block_exception``):
    ``flood_stage`` for the flood-stage disk watermark's, ``other`` for another (a write or
    read-only block an operator set); None when no block refused it.

    A block refuses the index, not the document, whatever its status (403 on older versions, and for
    an operator's block): the item is sent again until the block is lifted, never
    dead-lettered (the dead-letter index is just as blocked, so the event would be lost).
    """
    if not error or error.get("type") != "cluster_block_exception":
        return None
    ids = _BLOCK_IDS.findall(str(error.get("reason", "")))
    return "flood_stage" if str(FLOOD_STAGE_BLOCK) in ids else "other"


class Unavailable(Exception):
    """The request as a whole failed (no answer, a timeout, an error status): it is sent
    again later. Adapters raise it instead of their client's errors."""


@dataclass(frozen=True)
class ItemResult:
    status: int
    error: dict[str, Any] | None = None


CREATED = ItemResult(201)  # shared by every item of a bulk answer without errors


class Output(Protocol):
    """What the delivery loop needs of an output adapter."""

    def install_templates(self) -> None:
        """Prepare the destination (index templates) before anything is sent."""

    def bulk(self, records: Sequence[Record]) -> list[ItemResult]:
        """Send ``records``; a result per record, in order."""

    def delete_expired(self, today: date) -> list[str]:
        """Delete what is past its retention; the names deleted."""


def make_output(section: ShipperConfig) -> Output:
    """The output ``[shipper]`` configures."""
    # The adapters import this module, so they are imported here, when one is chosen.
    if section.output == "logstash":
        from hubkeeper.shippers.logstash import LogstashOutput

        return LogstashOutput(section.logstash)
    from hubkeeper.shippers.elasticsearch import ElasticsearchOutput

    return ElasticsearchOutput(section.elasticsearch)


# --- dead letters ----------------------------------------------------------------------

DAILY_INDEX = re.compile(r".+-(\d{4})\.(\d\d)\.(\d\d)$")  # ...-YYYY.MM.DD, the day as groups


def dead_letter_index(config: ShipperElasticsearchConfig, original_index: str) -> str:
    """The dead-letter index of the same day as the event's own index."""
    match = DAILY_INDEX.match(original_index)
    suffix = f"{match.group(1)}.{match.group(2)}.{match.group(3)}" if match else "undated"
    return f"{config.dead_letter_index}-{suffix}"


def dead_letter(record: Record, error: dict[str, Any] | None, index: str) -> Record:
    """A record for the dead-letter index carrying the original document and the error."""
    error = error or {}
    reason = str(error.get("reason", ""))
    caused = error.get("caused_by") or {}
    if caused.get("reason"):
        reason = f"{reason}: {caused['reason']}"
    doc = {
        "@timestamp": _timestamp(record.doc),
        "message": redact(reason)[:4096],
        "error.type": str(error.get("type", "unknown")),
        "event.original": record.doc.decode("utf-8", "replace"),
        "labels.target_index": record.index,
        "labels.source": record.source,
        "log.offset": record.start,
        "ecs.version": ECS_VERSION,
    }
    body = to_json(doc)
    return Record.of(record.key, record.start, record.resume, index, record.id, record.source, body)


def error_reason(error: dict[str, Any] | None) -> str:
    if not error:
        return "unknown"
    return f"{error.get('type', 'unknown')}: {str(error.get('reason', ''))[:300]}"


def _timestamp(doc: bytes) -> str | None:
    match = re.search(rb'"@timestamp":\s*"([^"]{10,40})"', doc)
    return match.group(1).decode() if match else None


# --- settling a bulk answer ------------------------------------------------------------


@dataclass
class Settled:
    """What one bulk answer means for its records."""

    again: list[Record] = field(default_factory=list)  # retried records and new dead letters
    done: Counts[Outcome] = field(default_factory=Counts)  # acknowledged, by outcome
    retried: int = 0  # records answered 429/5xx or refused by a block (in ``again``)
    blocked: Counts[str] = field(default_factory=Counts)  # of those, refused by a block
    dead_lettered: list[tuple[Record, str]] = field(default_factory=list)  # (record, reason)
    refused: list[tuple[Record, str]] = field(default_factory=list)  # dead letters refused too


def settle(
    records: Sequence[Record], results: Sequence[ItemResult], config: ShipperElasticsearchConfig
) -> Settled:
    """Sort a bulk answer: done (indexed, duplicate, dead-lettered), to send again (429/5xx,
    a block, and a dead letter for each permanent refusal), or given up (a refused dead
    letter)."""
    settled = Settled()
    dead_prefix = f"{config.dead_letter_index}-"
    if len(results) == len(records) == results.count(CREATED) and not _dead_letters_in(
        records, dead_prefix
    ):  # the usual answer: every record indexed, none a dead letter
        settled.done[Outcome.INDEXED] += len(records)
        return settled
    for record, result in zip(records, results, strict=True):
        kind = outcome(result.status, result.error)
        to_dead_letters = record.index.startswith(dead_prefix)
        if kind is Outcome.RETRY:
            settled.again.append(record)
            settled.retried += 1
            if (blocked := block(result.error)) is not None:
                settled.blocked[blocked] += 1
        elif kind is Outcome.DEAD and to_dead_letters:
            settled.refused.append((record, error_reason(result.error)))
        elif kind is Outcome.DEAD:
            index = dead_letter_index(config, record.index)
            settled.again.append(dead_letter(record, result.error, index))
            settled.dead_lettered.append((record, error_reason(result.error)))
            settled.done[kind] += 1
        elif not to_dead_letters:  # a dead letter itself was counted when it was refused
            settled.done[kind] += 1
    return settled


def _dead_letters_in(records: Sequence[Record], dead_prefix: str) -> bool:
    """Whether a record may be bound for the dead-letter index (a batch of spooled
    records is searched as its bytes: a document that holds the text only costs the look
    at each record)."""
    if isinstance(records, Batch):
        return b'{"create":{"_index":"%b' % dead_prefix.encode() in records.data
    return any(record.index.startswith(dead_prefix) for record in records)


# --- the settle-and-retry loop ---------------------------------------------------------

Retry = Callable[[int], bool]
"""Asked after the ``attempt``-th failed request or partial answer in a row (1, 2, ...):
True to go on (having waited), False to stop and hand back what is left."""


def retry_until(stopping: threading.Event, base: float, cap: float) -> Retry:
    """Go on after a full-jitter backoff until ``stopping`` is set: the log pipeline, whose
    offsets move on only once every record of a batch is done."""
    return lambda attempt: not stopping.wait(full_jitter(attempt, base, cap))


def next_round(_attempt: int) -> bool:
    """Stop at once: the document indexer keeps the rest buffered for its next flush, and
    its next measurements go out meanwhile."""
    return False


@dataclass
class Delivery:
    """One output behind the settle-and-retry loop; the owner counts and logs through the
    hooks: ``on_unavailable(error, attempt)`` for a request that failed as a whole,
    ``on_answer(settled)`` for each bulk answer, and ``timer()`` around each bulk request."""

    output: Output
    config: ShipperElasticsearchConfig
    retry: Retry
    on_unavailable: Callable[[Unavailable, int], None]
    on_answer: Callable[[Settled], None]
    timer: Callable[[], AbstractContextManager[object]] = nullcontext
    templates_installed: bool = False

    def install_templates(self) -> bool:
        """Install the output's templates unless done already; False if ``retry`` stopped
        first."""
        attempt = 0
        while not self.templates_installed:
            try:
                self.output.install_templates()
            except Unavailable as error:
                attempt += 1
                self.on_unavailable(error, attempt)
                if not self.retry(attempt):
                    return False
            else:
                self.templates_installed = True
        return True

    def send(self, records: Sequence[Record]) -> list[Record]:
        """Send until every record is done (indexed, duplicate or dead-lettered) or
        ``retry`` stops; the records not done yet (retried ones and new dead letters)."""
        pending = records
        attempt = 0
        while pending:
            try:
                with self.timer():
                    results = self.output.bulk(pending)
            except Unavailable as error:
                attempt += 1
                self.on_unavailable(error, attempt)
                if not self.retry(attempt):
                    return list(pending)
                continue
            settled = settle(pending, results, self.config)
            self.on_answer(settled)
            pending = settled.again
            if settled.retried:
                attempt += 1
                if not self.retry(attempt):
                    return pending
        return []
