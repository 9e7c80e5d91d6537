"""What hubkeeper indexes and how: the index templates of the log and dead-letter indices.

Fields ECS defines take ECS's mapping (:mod:`shippers.ecs`) where the cluster has the
mapper: ``match_only_text`` and ``wildcard`` come from modules that not every distribution
carries (the integ-test one has neither), so each is asked of the cluster once, at template
installation, and a missing one falls back to ``text`` or to ``keyword`` (whose ECS
``.text`` multi-field keeps full-text search). Whatever ECS does not define is
hubkeeper's own and lives under ``hubkeeper.*`` (typed here) or ``labels.*`` (keywords);
the other keys of JSON lines go to ``hubkeeper.json``, one ``flattened`` field, so no
container's keys can ever conflict with another's or multiply the mapping.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hubkeeper.config import ShipperElasticsearchConfig
from hubkeeper.shippers.delivery import Outcome
from hubkeeper.shippers.ecs import ECS_VERSION, FIELDS
from hubkeeper.shippers.parsers import DAEMON_KEYS

#: Mapper types ECS uses that a cluster may lack, and what stands in for each.
OPTIONAL_TYPES: dict[str, dict[str, Any]] = {
    "match_only_text": {"type": "text"},
    "wildcard": {"type": "keyword", "ignore_above": 8191},  # 8191 x 4 bytes: one Lucene term
}
PROBE_PATTERN = "hubkeeper-mapping-probe-*"  # simulated, never created

_KEYWORD = {"type": "keyword", "ignore_above": 1024}
_LONG = {"type": "long"}

#: Filebeat's byte offset of a line in its file: not ECS, kept as the Beats name.
BEATS_FIELDS: dict[str, dict[str, Any]] = {"log.offset": _LONG}

#: Fields ECS does not define (``labels.*`` are keywords by a dynamic template).
HUBKEEPER_FIELDS: dict[str, dict[str, Any]] = {
    "hubkeeper.stream": _KEYWORD,  # stdout or stderr of a container
    "hubkeeper.nginx.connection_id": _LONG,
    "hubkeeper.nginx.upstream": _KEYWORD,
    "hubkeeper.json": {"type": "flattened", "ignore_above": 1024},
    "hubkeeper.failure": _KEYWORD,  # why a line was shipped raw
    "hubkeeper.storage.state": _KEYWORD,  # a notebook mount's: ok, slow, failed, hung
    "hubkeeper.timestamp_original": _KEYWORD,  # an impossible timestamp, replaced
    **{name: _KEYWORD for name in DAEMON_KEYS.values() if name.startswith("hubkeeper.")},
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
            "hubkeeper.storage.free.bytes",
            "hubkeeper.storage.servers_on_hung",
            *(f"hubkeeper.shipper.events.{o.value}" for o in Outcome),
        ],
        _LONG,
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
            "hubkeeper.storage.free_pct",
            "hubkeeper.storage.free_inodes_pct",
            "hubkeeper.storage.probe.seconds",
        ],
        {"type": "double"},
    ),
    **dict.fromkeys(
        [
            "hubkeeper.container.orphan",
            "hubkeeper.docker.up",
            "hubkeeper.hub.up",
            "hubkeeper.shipper.output.up",
            "hubkeeper.storage.hung",
        ],
        {"type": "boolean"},
    ),
}

#: The ``labels.*`` hubkeeper writes, mapped up front (the dynamic template would map them
#: alike, but only once a document carrying one is indexed): a Kibana data view lists only
#: mapped fields, and a panel aggregating on an unlisted one fails.
LABEL_FIELDS: dict[str, dict[str, Any]] = dict.fromkeys(
    [
        "labels.jupyterhub_user",
        "labels.jupyterhub_server",
        "labels.hub",
        "labels.node",
        "labels.mount",
        "labels.spawn_failure",
        "labels.user_options",
    ],
    _KEYWORD,
)

#: The fields of a dead letter: the refused document whole, and why.
DEAD_LETTER_FIELDS = ("message", "error.type", "event.original", "ecs.version")


def supported_types(accepts: Callable[[dict[str, Any]], bool]) -> frozenset[str]:
    """The optional types the cluster maps: ``accepts`` is asked once per type whether the
    cluster takes a template using it (a simulation, which needs no privilege beyond
    managing templates, unlike listing the nodes' modules)."""
    return frozenset(
        name
        for name in OPTIONAL_TYPES
        if accepts({"mappings": {"properties": {"probe": {"type": name}}}})
    )


def for_cluster(mapping: dict[str, Any], supported: frozenset[str]) -> dict[str, Any]:
    """An ECS mapping as the cluster can take it: an optional type it lacks replaced by its
    stand-in (multi-fields too); ECS's ``object_type`` is no mapping parameter."""
    result = {key: value for key, value in mapping.items() if key != "object_type"}
    if result["type"] in OPTIONAL_TYPES and result["type"] not in supported:
        result.update(OPTIONAL_TYPES[result["type"]])
    if "fields" in result:
        result["fields"] = {
            name: for_cluster(sub, supported) for name, sub in result["fields"].items()
        }
    return result


def log_fields(supported: frozenset[str] = frozenset()) -> dict[str, dict[str, Any]]:
    """Every mapped field of the log indices, by dotted name."""
    ecs = {name: for_cluster(mapping, supported) for name, mapping in FIELDS.items()}
    return {**ecs, **BEATS_FIELDS, **HUBKEEPER_FIELDS, **LABEL_FIELDS}


def properties(fields: dict[str, Any]) -> dict[str, Any]:
    """Dotted field names as nested ``properties``."""
    root: dict[str, Any] = {}
    for name, mapping in fields.items():
        node = root
        *parents, leaf = name.split(".") if name != "@timestamp" else [name]
        for part in parents:  # (an object mapped itself, as ECS's labels, gets properties)
            node = node.setdefault(part, {}).setdefault("properties", {})
        node[leaf] = mapping
    return root


def templates(
    config: ShipperElasticsearchConfig, supported: frozenset[str] = frozenset()
) -> dict[str, dict[str, Any]]:
    """Index templates by name: the log indices and the dead-letter indices, with the
    optional types in ``supported`` (none: what every cluster maps)."""
    settings = {"number_of_shards": config.shards, "number_of_replicas": config.replicas}
    meta = {"managed_by": "hubkeeper", "ecs_version": ECS_VERSION}
    fields = log_fields(supported)
    logs = {
        "index_patterns": [f"{config.index_prefix}-*"],
        "priority": 200,
        "template": {
            "settings": {**settings, "index.mapping.total_fields.limit": 2000},
            "mappings": {
                "date_detection": False,
                "numeric_detection": False,
                "dynamic_templates": [
                    {"labels": {"path_match": "labels.*", "mapping": _KEYWORD}},
                    {"strings": {"match_mapping_type": "string", "mapping": _KEYWORD}},
                ],
                "properties": properties(fields),
            },
        },
        "_meta": meta,
    }
    dead_fields = {name: fields[name] for name in DEAD_LETTER_FIELDS}
    dead = {
        "index_patterns": [f"{config.dead_letter_index}-*"],
        "priority": 210,  # wins where the two patterns overlap
        "template": {
            "settings": settings,
            "mappings": {
                "dynamic": False,
                "properties": properties(
                    {
                        "@timestamp": {"type": "date", "ignore_malformed": True},
                        **dead_fields,
                        "labels.target_index": _KEYWORD,
                        "labels.source": _KEYWORD,
                        **BEATS_FIELDS,
                    }
                ),
            },
        },
        "_meta": meta,
    }
    return {config.index_prefix: logs, config.dead_letter_index: dead}
