"""Every field hubkeeper indexes is an Elastic Common Schema field mapped as ECS 9.2.0 maps
it (or with a stand-in where the cluster lacks the mapper), or hubkeeper's own under
``hubkeeper.*`` or ``labels.*``; every document carries ``ecs.version``."""

import json
from pathlib import Path
from typing import Any

import pytest

from hubkeeper.config import ShipperElasticsearchConfig, ShipperSource
from hubkeeper.loader import from_dict
from hubkeeper.shippers.delivery import dead_letter
from hubkeeper.shippers.documents import document_record
from hubkeeper.shippers.ecs import ECS_VERSION, FIELDS
from hubkeeper.shippers.mapping import (
    BEATS_FIELDS,
    HUBKEEPER_FIELDS,
    OPTIONAL_TYPES,
    log_fields,
    supported_types,
    templates,
)
from hubkeeper.shippers.shipper import Shipper
from hubkeeper.shippers.sources import Files, Settings, make_sources
from hubkeeper.shippers.store import Registry
from hubkeeper.watchers.containers.documents import snapshot_documents
from tests.unit.test_container_documents import RECONCILED, snapshot
from tests.unit.test_shipper_parsers import HUB, REFUSED_LINES, SPAWNER_LINES

ALL = frozenset(OPTIONAL_TYPES)
JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "keyword": str, "wildcard": str, "match_only_text": str, "text": str, "date": str,
    "ip": str, "long": int, "double": (int, float), "boolean": bool, "flattened": dict,
}  # fmt: skip


def mapping_in(template: dict[str, Any], name: str) -> dict[str, Any]:
    node: dict[str, Any] = {"properties": template["template"]["mappings"]["properties"]}
    for part in [name] if name == "@timestamp" else name.split("."):
        node = node["properties"][part]
    return node


@pytest.mark.parametrize("supported", [ALL, frozenset()])
def test_ecs_fields_take_ecs_mappings_or_a_stand_in(supported: frozenset[str]) -> None:
    logs = templates(ShipperElasticsearchConfig(), supported)["hubkeeper-logs"]
    for name, ecs in FIELDS.items():  # (ECS's labels object holds hubkeeper's labels.*)
        mapped = {k: v for k, v in mapping_in(logs, name).items() if k != "properties"}
        expected = {key: value for key, value in ecs.items() if key != "object_type"}
        if supported:
            assert mapped == expected, name
        elif ecs["type"] in OPTIONAL_TYPES:
            assert mapped["type"] == OPTIONAL_TYPES[ecs["type"]]["type"], name
        else:
            assert mapped["type"] == ecs["type"], name
    assert logs["_meta"]["ecs_version"] == ECS_VERSION


def test_the_types_the_issue_names() -> None:
    full = templates(ShipperElasticsearchConfig(), ALL)["hubkeeper-logs"]
    bare = templates(ShipperElasticsearchConfig())["hubkeeper-logs"]
    assert mapping_in(full, "error.stack_trace")["type"] == "wildcard"
    assert mapping_in(full, "message") == {"type": "match_only_text"}
    for template in (full, bare):
        assert mapping_in(template, "event.original") == {
            "type": "keyword", "index": False, "doc_values": False,
        }  # fmt: skip
        assert mapping_in(template, "hubkeeper.json")["type"] == "flattened"
    # the integ-test distribution has neither mapper: text, and keyword with a text field
    assert mapping_in(bare, "message") == {"type": "text"}
    assert mapping_in(bare, "error.stack_trace") == {
        "type": "keyword", "ignore_above": 8191, "fields": {"text": {"type": "text"}},
    }  # fmt: skip
    dead = templates(ShipperElasticsearchConfig(), ALL)["hubkeeper-deadletter"]
    assert mapping_in(dead, "event.original")["index"] is False


def test_each_optional_type_is_asked_of_the_cluster_once() -> None:
    asked: list[str] = []

    def accepts(template: dict[str, Any]) -> bool:
        (kind,) = [f["type"] for f in template["mappings"]["properties"].values()]
        asked.append(kind)
        return kind == "wildcard"

    assert supported_types(accepts) == {"wildcard"}
    assert sorted(asked) == sorted(OPTIONAL_TYPES)


def test_hubkeepers_own_fields_are_namespaced() -> None:
    assert all(name.startswith("hubkeeper.") for name in HUBKEEPER_FIELDS)
    assert not set(HUBKEEPER_FIELDS) & set(FIELDS) and set(BEATS_FIELDS) == {"log.offset"}
    assert {"hubkeeper.failure", "hubkeeper.timestamp_original"} <= set(HUBKEEPER_FIELDS)


# --- every document, as the shipper and the daemons write it ------------------------------


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def docker_record(text: str, stream: str) -> str:
    return json.dumps({"log": f"{text}\n", "stream": stream, "time": "2026-11-25T10:00:00.5Z"})


def shipped(tmp_path: Path) -> list[dict[str, Any]]:
    """The documents of one read of a hub, NGINX, JSON and container log holding every kind
    of line the parsers know, and some they do not."""
    hub_lines = [line for line, *_ in SPAWNER_LINES + REFUSED_LINES] + [
        HUB + "200 GET /hub/api/users?offset=0 (operator@127.0.0.1) 22.29ms",
        HUB + "User alice server stopped with exit code: 137",
        HUB + "Error starting alice's server: HTTP 400: Bad Request",
        "[E 2026-11-25 17:16:10.046 JupyterHub web:1] Uncaught exception",
        "    Traceback (most recent call last):",
        "    ValueError: boom",
        "[I 2026-02-30 17:16:10.046 JupyterHub app:1] a day that does not exist",
        "2026-11-25T17:16:10.033Z [ConfigProxy] \x1b[32minfo\x1b[39m: 201 POST /api/routes/x",
        "something no parser knows",
    ]
    json_lines = [
        '{"event": "cull_decision", "user": "cat", "reason": "idle", "action": "stop", '
        '"result": "done", "hub": "a", "server": "", "logger": "hubkeeper.watchers.culler.report"}',
        '{"msg": "hi", "user": {"id": 7}, "time": 1795608000.5}',
        '{"a": ' * 30 + "1" + "}" * 30,  # too deep for the index: shipped raw
    ]
    access = '127.0.0.1 - bob [25/Nov/2026:18:16:07 +0100] "GET /hub/ HTTP/1.1" 200 20 "-" "x"'
    error = (
        "2026/11/25 17:16:07 [error] 26058#26058: *5 connect() failed, client: 127.0.0.1, "
        'server: , request: "GET /hub/ HTTP/1.1", upstream: "http://127.0.0.1:8001/hub/"'
    )
    stdout, stderr = docker_record("plain output", "stdout"), docker_record("oops", "stderr")
    write(tmp_path / "c1" / "c1-json.log", [stdout, stderr])
    sources = [
        ShipperSource(name="hub", paths=[str(write(tmp_path / "hub.log", hub_lines))],
                      parser="jupyterhub", timezone="UTC"),
        ShipperSource(name="own", paths=[str(write(tmp_path / "own.log", json_lines))],
                      parser="json"),
        ShipperSource(name="access", paths=[str(write(tmp_path / "access.log", [access]))],
                      parser="nginx_access"),
        ShipperSource(name="error", paths=[str(write(tmp_path / "error.log", [error]))],
                      parser="nginx_error", timezone="UTC"),
        ShipperSource(name="containers", type="docker",
                      paths=[str(tmp_path / "*" / "*-json.log")]),
    ]  # fmt: skip

    def container(container_id: str) -> dict[str, str]:  # as shippers.shipper.docker_lookup
        return {"container.id": container_id, "container.name": "jupyter-ann",
                "container.image.name": "img", "user.name": "ann",
                "labels.jupyterhub_user": "ann", "labels.jupyterhub_server": "",
                "labels.hub": "main"}  # fmt: skip

    files = Files(make_sources(sources, None), Registry(tmp_path / "r.json"),
                  Settings(multiline_timeout=0.0, host_name="h"), {}, container)  # fmt: skip
    files.scan()
    records, _ = files.read(1 << 20)
    docs = [json.loads(record.doc) for record in records]
    assert len(docs) == len(hub_lines) - 2 + len(json_lines) + 2 + 2  # a traceback is one
    return docs


def daemon_documents(tmp_path: Path) -> list[dict[str, Any]]:
    """Container snapshots, the hub's state and the shipper's status, as indexed."""
    pairs = snapshot_documents(snapshot(), RECONCILED, "main", "node1")
    app = {"name": "app", "paths": ["/nowhere/*"]}
    config = from_dict({"shipper": {"state_dir": str(tmp_path / "state"), "sources": [app]}})
    shipper = Shipper(config)
    try:
        pairs.append(shipper.status())
    finally:
        shipper.stop()
    return [json.loads(document_record("p", key, doc).doc) for key, doc in pairs]


def test_every_field_a_document_can_carry_is_ecs_or_hubkeepers(tmp_path: Path) -> None:
    docs = shipped(tmp_path) + daemon_documents(tmp_path)
    fields = log_fields(ALL)
    seen: set[str] = set()
    for doc in docs:
        assert doc["ecs.version"] == ECS_VERSION
        for name, value in doc.items():
            seen.add(name)
            if name.startswith("labels."):
                mapped = "keyword"  # ECS: labels are keywords
            else:
                assert name in fields, f"{name} is neither ECS nor under hubkeeper.*/labels.*"
                mapped = fields[name]["type"]
            for item in value if isinstance(value, list) else [value]:
                assert isinstance(item, JSON_TYPES[mapped]), f"{name}={item!r} for {mapped}"
    # what this corpus must have reached (the fields this change added or moved)
    assert {
        "hubkeeper.stream", "hubkeeper.json", "hubkeeper.nginx.connection_id",
        "hubkeeper.nginx.upstream", "hubkeeper.failure", "hubkeeper.timestamp_original",
        "hubkeeper.event.action", "event.reason", "container.image.name",
        "labels.jupyterhub_server", "labels.user_options", "error.stack_trace",
        "hubkeeper.container.memory.oom_kills", "hubkeeper.shipper.lag.seconds",
    } <= seen  # fmt: skip


def test_dead_letters_are_mapped_by_their_own_template(tmp_path: Path) -> None:
    source = ShipperSource(name="app", paths=[str(write(tmp_path / "a.log", ["x"]))], parser="raw")
    files = Files(make_sources([source], None), Registry(tmp_path / "r.json"),
                  Settings(multiline_timeout=0.0), {})  # fmt: skip
    files.scan()
    (record,) = files.read(1 << 20)[0]
    error = {"type": "document_parsing_exception", "reason": "failed to parse"}
    doc = json.loads(dead_letter(record, error, "hubkeeper-deadletter-2026.11.25").doc)
    dead = templates(ShipperElasticsearchConfig())["hubkeeper-deadletter"]
    for name in doc:
        assert mapping_in(dead, name), name
