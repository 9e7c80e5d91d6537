"""The Elastic Common Schema version hubkeeper's documents conform to, and a vendored
subset of its field definitions: the ECS fields hubkeeper emits, as ECS maps them.

Taken from ECS 9.2.0 (``generated/ecs/ecs_flat.yml`` of github.com/elastic/ecs, tag
``v9.2.0``): each field's ``type``, ``ignore_above``, ``index``/``doc_values`` and
multi-fields, nothing else. Add a field here only with ECS's own definition; anything ECS
does not define lives under ``hubkeeper.*`` or ``labels.*`` (:mod:`shippers.mapping`).
"""

from __future__ import annotations

from typing import Any

ECS_VERSION = "9.2.0"

_KEYWORD = {"type": "keyword", "ignore_above": 1024}
_KEYWORD_AND_TEXT = {**_KEYWORD, "fields": {"text": {"type": "match_only_text"}}}
_LONG = {"type": "long"}

FIELDS: dict[str, dict[str, Any]] = {
    "@timestamp": {"type": "date"},
    "message": {"type": "match_only_text"},
    "tags": _KEYWORD,
    "labels": {"type": "object", "object_type": "keyword"},
    "ecs.version": _KEYWORD,
    "log.level": _KEYWORD,
    "log.logger": _KEYWORD,
    "log.origin.file.name": _KEYWORD,
    "log.origin.file.line": _LONG,
    "log.file.path": _KEYWORD,
    "event.dataset": _KEYWORD,
    "event.action": _KEYWORD,
    "event.duration": _LONG,
    "event.kind": _KEYWORD,
    "event.original": {"type": "keyword", "index": False, "doc_values": False},
    "event.reason": _KEYWORD,
    "service.name": _KEYWORD,
    "host.name": _KEYWORD,
    "container.id": _KEYWORD,
    "container.name": _KEYWORD,
    "container.image.name": _KEYWORD,
    "user.name": _KEYWORD_AND_TEXT,
    "client.ip": {"type": "ip"},
    "url.original": {"type": "wildcard", "fields": {"text": {"type": "match_only_text"}}},
    "url.path": {"type": "wildcard"},
    "url.query": {"type": "keyword", "ignore_above": 2083},
    "http.request.method": _KEYWORD,
    "http.request.referrer": _KEYWORD,
    "http.response.status_code": _LONG,
    "http.response.body.bytes": _LONG,
    "http.version": _KEYWORD,
    "user_agent.original": _KEYWORD_AND_TEXT,
    "error.type": _KEYWORD,
    "error.message": {"type": "match_only_text"},
    "error.stack_trace": {"type": "wildcard", "fields": {"text": {"type": "match_only_text"}}},
    "process.pid": _LONG,
    "process.exit_code": _LONG,
    "process.thread.id": _LONG,
}
