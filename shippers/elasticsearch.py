"""The Elasticsearch output: index templates, bulk ``create`` with per-item outcomes,
dead letters, retention of daily indices.

Each event is created with a deterministic ``_id`` in a daily index chosen from its own
timestamp, so a re-sent event is answered 409 and never indexed twice.
"""

from __future__ import annotations

import enum
import json
import random
import re
from collections import Counter as Counts
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, TransportError
from elasticsearch import ApiError, Elasticsearch

from hubkeeper.config import ShipperElasticsearchConfig
from hubkeeper.redact import redact
from shippers.store import Record


class Outcome(enum.Enum):
    INDEXED = "indexed"
    DUPLICATE = "duplicate"
    RETRY = "retried"
    DEAD = "dead_lettered"


def outcome(status: int) -> Outcome:
    """What one bulk item's status means: done (2xx, 409), try again (429, 5xx), or a
    permanent refusal (other 4xx) that goes to the dead-letter index."""
    if 200 <= status < 300:
        return Outcome.INDEXED
    if status == 409:
        return Outcome.DUPLICATE
    if status == 429 or status >= 500:
        return Outcome.RETRY
    return Outcome.DEAD


def backoff(attempt: int, base: float, cap: float) -> float:
    """Full-jitter exponential backoff for the ``attempt``-th retry (1, 2, ...)."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


class Unavailable(Exception):
    """The whole request failed (no answer, timeout, 429 or 5xx): send it again later."""


@dataclass(frozen=True)
class ItemResult:
    status: int
    error: dict[str, Any] | None = None


# --- index names and retention ---------------------------------------------------------

_DAILY = re.compile(r".+-(\d{4})\.(\d\d)\.(\d\d)$")


def expired(indices: Sequence[str], today: date, days: int) -> list[str]:
    """Daily indices (``...-YYYY.MM.DD``) older than ``days`` days; none when days is 0."""
    if days <= 0:
        return []
    cutoff = today - timedelta(days=days)
    old = []
    for name in indices:
        match = _DAILY.match(name)
        if match:
            try:
                day = date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
            except ValueError:
                continue
            if day < cutoff:
                old.append(name)
    return sorted(old)


def dead_letter_index(config: ShipperElasticsearchConfig, original_index: str) -> str:
    """The dead-letter index of the same day as the event's own index."""
    match = _DAILY.match(original_index)
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
    }
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Record(record.key, record.start, record.resume, index, record.id, record.source, body)


@dataclass
class Settled:
    """What one bulk answer means for its records."""

    again: list[Record] = field(default_factory=list)  # retried records and new dead letters
    done: Counts[Outcome] = field(default_factory=Counts)  # acknowledged, by outcome
    retried: bool = False
    dead_lettered: list[tuple[Record, str]] = field(default_factory=list)  # (record, reason)
    refused: list[tuple[Record, str]] = field(default_factory=list)  # dead letters refused too


def settle(
    records: Sequence[Record], results: Sequence[ItemResult], config: ShipperElasticsearchConfig
) -> Settled:
    """Sort a bulk answer: done (indexed, duplicate, dead-lettered), to send again (429/5xx,
    and a dead letter for each permanent refusal), or given up (a refused dead letter)."""
    settled = Settled()
    dead_prefix = f"{config.dead_letter_index}-"
    for record, result in zip(records, results, strict=True):
        kind = outcome(result.status)
        to_dead_letters = record.index.startswith(dead_prefix)
        if kind is Outcome.RETRY:
            settled.again.append(record)
            settled.retried = True
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


def error_reason(error: dict[str, Any] | None) -> str:
    if not error:
        return "unknown"
    return f"{error.get('type', 'unknown')}: {str(error.get('reason', ''))[:300]}"


def _timestamp(doc: bytes) -> str | None:
    match = re.search(rb'"@timestamp":\s*"([^"]{10,40})"', doc)
    return match.group(1).decode() if match else None


# --- templates -------------------------------------------------------------------------

_KEYWORD = {"type": "keyword", "ignore_above": 1024}
_FIELDS: dict[str, Any] = {
    "@timestamp": {"type": "date"},
    "message": {"type": "text"},
    "tags": {"type": "keyword"},
    "log.level": {"type": "keyword"},
    "log.logger": {"type": "keyword"},
    "log.origin.file.name": {"type": "keyword"},
    "log.origin.file.line": {"type": "long"},
    "log.file.path": {"type": "keyword"},
    "log.offset": {"type": "long"},
    "event.dataset": {"type": "keyword"},
    "event.action": {"type": "keyword"},
    "event.duration": {"type": "long"},
    "service.name": {"type": "keyword"},
    "host.name": {"type": "keyword"},
    "container.id": {"type": "keyword"},
    "container.name": {"type": "keyword"},
    "container.image.name": {"type": "keyword"},
    "user.name": {"type": "keyword"},
    "client.ip": {"type": "ip", "ignore_malformed": True},
    "url.original": {"type": "keyword", "ignore_above": 8192},
    "url.path": {"type": "keyword", "ignore_above": 8192},
    "url.query": {"type": "keyword", "ignore_above": 8192},
    "http.request.method": {"type": "keyword"},
    "http.request.referrer": {"type": "keyword", "ignore_above": 8192},
    "http.response.status_code": {"type": "long"},
    "http.response.body.bytes": {"type": "long"},
    "http.version": {"type": "keyword"},
    "user_agent.original": {"type": "keyword", "ignore_above": 8192},
    "error.type": {"type": "keyword"},
    "error.message": {"type": "text"},
    "error.stack_trace": {"type": "text"},
    "process.pid": {"type": "long"},
    "process.exit_code": {"type": "long"},
    "process.thread.id": {"type": "long"},
    "stream": {"type": "keyword"},
    "event.kind": {"type": "keyword"},
    # documents the daemons index themselves (shippers/documents.py)
    **dict.fromkeys(
        [
            "hubkeeper.container.memory.working_set.bytes",
            "hubkeeper.container.memory.usage.bytes",
            "hubkeeper.container.memory.limit.bytes",
            "hubkeeper.container.memory.oom_kills",
            "hubkeeper.container.processes",
            "hubkeeper.hub.containers",
            "hubkeeper.hub.servers",
            "hubkeeper.hub.orphans",
            "hubkeeper.hub.missing",
            "hubkeeper.shipper.lag.bytes",
            "hubkeeper.shipper.spool.bytes",
            *(f"hubkeeper.shipper.events.{o.value}" for o in Outcome),
        ],
        {"type": "long"},
    ),
    **dict.fromkeys(
        [
            "hubkeeper.container.memory.pct_of_limit",
            "hubkeeper.container.cpu.cores",
            "hubkeeper.container.cpu.limit.cores",
            "hubkeeper.container.cpu.pct_of_limit",
            "hubkeeper.container.cpu.throttled_ratio",
            "hubkeeper.shipper.lag.seconds",
            "hubkeeper.shipper.spool.pct_of_limit",
        ],
        {"type": "double"},
    ),
    **dict.fromkeys(
        [
            "hubkeeper.container.orphan",
            "hubkeeper.docker.up",
            "hubkeeper.hub.up",
            "hubkeeper.shipper.output.up",
        ],
        {"type": "boolean"},
    ),
}


def _properties(fields: dict[str, Any]) -> dict[str, Any]:
    """Dotted field names as nested ``properties``."""
    root: dict[str, Any] = {}
    for name, mapping in fields.items():
        node = root
        *parents, leaf = name.split(".") if name != "@timestamp" else [name]
        for part in parents:
            node = node.setdefault(part, {"properties": {}})["properties"]
        node[leaf] = mapping
    return root


def templates(config: ShipperElasticsearchConfig) -> dict[str, dict[str, Any]]:
    """Index templates by name: the log indices and the dead-letter indices."""
    settings = {"number_of_shards": config.shards, "number_of_replicas": config.replicas}
    logs = {
        "index_patterns": [f"{config.index_prefix}-*"],
        "priority": 200,
        "template": {
            "settings": {**settings, "index.mapping.total_fields.limit": 2000},
            "mappings": {
                "date_detection": False,
                "numeric_detection": False,
                "dynamic_templates": [
                    {"strings": {"match_mapping_type": "string", "mapping": _KEYWORD}},
                ],
                "properties": _properties(_FIELDS),
            },
        },
        "_meta": {"managed_by": "hubkeeper"},
    }
    dead = {
        "index_patterns": [f"{config.dead_letter_index}-*"],
        "priority": 210,  # wins where the two patterns overlap
        "template": {
            "settings": settings,
            "mappings": {
                "dynamic": False,
                "properties": _properties(
                    {
                        "@timestamp": {"type": "date", "ignore_malformed": True},
                        "message": {"type": "text"},
                        "error.type": {"type": "keyword"},
                        "event.original": {"type": "text", "index": False},
                        "labels.target_index": {"type": "keyword"},
                        "labels.source": {"type": "keyword"},
                        "log.offset": {"type": "long"},
                    }
                ),
            },
        },
        "_meta": {"managed_by": "hubkeeper"},
    }
    return {config.index_prefix: logs, config.dead_letter_index: dead}


# --- the client ------------------------------------------------------------------------


class ElasticsearchOutput:
    """Bulk ``create`` requests to the configured nodes (no client-side retries: the
    pipeline decides per item)."""

    def __init__(self, config: ShipperElasticsearchConfig) -> None:
        self.config = config
        options: dict[str, Any] = {
            "request_timeout": config.timeout,
            "max_retries": 0,
            "retry_on_timeout": False,
        }
        if config.api_key is not None:
            options["api_key"] = config.api_key.reveal()
        if config.username is not None and config.password is not None:
            options["basic_auth"] = (config.username, config.password.reveal())
        if config.ca_file is not None:
            options["ca_certs"] = config.ca_file
        self.client = Elasticsearch(config.hosts, **options)

    def install_templates(self) -> None:
        for name, body in templates(self.config).items():
            self._call(lambda name=name, body=body: self.client.indices.put_index_template(
                name=name, **body
            ))  # fmt: skip

    def bulk(self, records: Sequence[Record]) -> list[ItemResult]:
        """One bulk request; a result per record, in order. Raises :class:`Unavailable`."""
        parts: list[bytes] = []
        for record in records:  # index names and ids are plain: no escaping needed
            parts.append(
                f'{{"create":{{"_index":"{record.index}","_id":"{record.id}"}}}}\n'.encode()
            )
            parts.append(record.doc + b"\n")
        body = b"".join(parts)
        response = self._call(
            lambda: self.client.bulk(operations=body, filter_path="items.*.status,items.*.error")
        )
        items = response["items"]
        if len(items) != len(records):
            raise Unavailable(f"bulk answered {len(items)} items for {len(records)}")
        results = []
        for item in items:
            (body,) = item.values()
            results.append(ItemResult(int(body["status"]), body.get("error")))
        return results

    def delete_expired(self, today: date) -> list[str]:
        """Delete daily log and dead-letter indices older than ``retention_days``."""
        patterns = f"{self.config.index_prefix}-*,{self.config.dead_letter_index}-*"
        found = self._call(
            lambda: self.client.indices.get(index=patterns, expand_wildcards="open,closed")
        )
        old = expired(list(found), today, self.config.retention_days)
        for name in old:
            self._call(lambda name=name: self.client.indices.delete(index=name))
        return old

    @staticmethod
    def _call(request: Any) -> Any:
        """Run a client call; transient failures become :class:`Unavailable` (a message
        without the request, which would carry credentials)."""
        try:
            return request().body
        except ApiError as error:
            if error.status_code == 429 or error.status_code >= 500:
                raise Unavailable(f"HTTP {error.status_code}: {error.error}") from None
            raise
        except (TransportConnectionError, ConnectionTimeout, TransportError) as error:
            raise Unavailable(type(error).__name__) from None
