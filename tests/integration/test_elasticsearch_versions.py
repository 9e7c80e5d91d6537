"""Everything that talks to Elasticsearch, against a real 8.x and a real 9.x cluster: the
shipper process (templates, lines, a dead letter), the document indexer and the dashboards'
preview. The same input goes to both; what comes out must be the same."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry

from hubkeeper.config import ShipperConfig, ShipperElasticsearchConfig
from hubkeeper.dashboards.preview import preview
from hubkeeper.deploy.elasticsearch import (
    ES8_VERSION,
    ES_VERSION,
    Elasticsearch,
    running_elasticsearch,
)
from hubkeeper.deploy.stack import free_ports
from hubkeeper.shippers.documents import DocumentIndexer
from tests.integration.shipping import (
    ShipperRun,
    dynamic_json_keys,
    search,
    stop_shippers,  # noqa: F401  (autouse)
)

pytestmark = pytest.mark.beside  # runs beside the main lane (tests/run)

MAJORS = (8, 9)
NAME = "versions"  # indices <NAME>-logs-*, dead letters <NAME>-dead-*
START = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)  # of all the input


@pytest.fixture(scope="module")
def elasticsearch8() -> Iterator[Elasticsearch]:
    """The 8.x cluster, for this module only (the session's ``elasticsearch`` is the 9.x)."""
    with running_elasticsearch(version=ES8_VERSION) as instance:
        yield instance


@dataclass
class Shipped:
    es: Elasticsearch
    run: ShipperRun
    documents: CollectorRegistry


def input_files(folder: Path) -> list[dict[str, Any]]:
    """A hub log, an NGINX access log and a JSON log from the last minutes, the same for
    both clusters; the JSON log's second line conflicts with the site's mapping."""
    folder.mkdir(parents=True, exist_ok=True)
    hub, nginx = [], []
    for minute, (status, ms, user) in enumerate(
        [(200, 5.2, "alice"), (404, 12.0, "bob"), (500, 250.5, "alice"), (200, 80.0, "carol")]
    ):
        at = START + timedelta(minutes=minute)
        hub.append(f"[I {at:%Y-%m-%d %H:%M:%S}.000 JupyterHub log:192] {status} GET "
                   f"/hub/api/users/{user} (admin@127.0.0.1) {ms}ms")  # fmt: skip
        nginx.append(f'127.0.0.1 - {user} [{at:%d/%b/%Y:%H:%M:%S} +0000] "GET /user/{user}/ '
                     f'HTTP/1.1" {status} 512 "-" "curl/8"')  # fmt: skip
    hub.append(f"[I {START:%Y-%m-%d %H:%M:%S}.500 JupyterHub base:1000] User alice took "
               "3.6 seconds to start")  # fmt: skip
    stamp = f"{START:%Y-%m-%dT%H:%M:%S}Z"
    json_lines = [{"message": m, "count": c, "timestamp": stamp}
                  for m, c in (("first", 1), ("second", "many"), ("third", 3))]  # fmt: skip
    (folder / "hub.log").write_text("\n".join(hub) + "\n")
    (folder / "access.log").write_text("\n".join(nginx) + "\n")
    (folder / "app.jsonl").write_text("".join(json.dumps(line) + "\n" for line in json_lines))
    return [
        {"name": "hub", "paths": [str(folder / "hub.log")], "parser": "jupyterhub"},
        {"name": "nginx-access", "paths": [str(folder / "access.log")], "parser": "nginx_access"},
        {"name": "app", "paths": [str(folder / "app.jsonl")], "parser": "json"},
    ]


def container_documents(good: bool) -> list[tuple[str, dict[str, Any]]]:
    """A container snapshot; a working set that is no number when not ``good``."""
    return [("c1" if good else "c2", {
        "@timestamp": f"{START:%Y-%m-%dT%H:%M:%S}.000Z", "event.dataset": "hubkeeper.containers",
        "event.kind": "metric", "labels.jupyterhub_user": "alice",
        "hubkeeper.container.memory.working_set.bytes": 128 * 2**20 if good else "lots",
    })]  # fmt: skip


def ship(es: Elasticsearch, workdir: Path) -> Shipped:
    """The input files through a real shipper process, and two documents through the
    document indexer, into ``es``."""
    sources = input_files(workdir / "input")
    for source in sources:
        source["timezone"] = "UTC"
    run = ShipperRun(workdir / "shipper", es, NAME, sources)
    dynamic_json_keys(es, f"{NAME}-logs", "json")
    try:
        run.start()
        run.wait_shipped(*(Path(s["paths"][0]) for s in sources))
    finally:
        run.stop()
    registry = CollectorRegistry()
    nowhere = f"http://127.0.0.1:{free_ports(1)[0]}"  # a node down: the next one answers
    section = ShipperConfig(
        elasticsearch=ShipperElasticsearchConfig(
            hosts=[nowhere, es.url], index_prefix=f"{NAME}-logs", dead_letter_index=f"{NAME}-dead",
            replicas=0, retention_days=0, timeout=10.0,
        )
    )  # fmt: skip
    indexer = DocumentIndexer(section, registry, "versions")
    indexer.add(container_documents(good=True) + container_documents(good=False))
    indexer.flush()
    return Shipped(es, run, registry)


@pytest.fixture(scope="module")
def shipped(
    elasticsearch8: Elasticsearch, elasticsearch: Elasticsearch, tmp_path_factory: Any
) -> dict[int, Shipped]:
    clusters = {8: elasticsearch8, 9: elasticsearch}
    return {
        major: ship(es, tmp_path_factory.mktemp(f"es{major}")) for major, es in clusters.items()
    }


def compatible_with(major: int) -> dict[str, str]:
    return {"Accept": f"application/vnd.elasticsearch+json; compatible-with={major}"}


def test_the_clusters_are_the_majors_under_test(shipped: dict[int, Shipped]) -> None:
    """And the 8.x refuses a 9.x client's default compatibility mode: the case at stake."""
    for major, version in zip(MAJORS, (ES8_VERSION, ES_VERSION), strict=True):
        url = f"{shipped[major].es.url}/_nodes/_local"
        (node,) = requests.get(url, timeout=10).json()["nodes"].values()
        assert node["version"] == version and version.startswith(f"{major}.")
    answer = requests.get(f"{shipped[8].es.url}/_cluster/health", headers=compatible_with(9))
    assert answer.status_code == 400 and "media_type_header_exception" in answer.text


@pytest.mark.parametrize("major", MAJORS)
def test_the_shipper_speaks_the_servers_compatibility_mode(
    shipped: dict[int, Shipped], major: int
) -> None:
    events = [e for e in shipped[major].run.log() if e["event"] == "elasticsearch_version"]
    assert events and {e["compatible_with"] for e in events} == {major}
    assert not [e for e in shipped[major].run.log() if e["event"] == "output_unavailable"]


@pytest.mark.parametrize("major", MAJORS)
def test_every_line_arrives_once_and_the_refused_one_is_a_dead_letter(
    shipped: dict[int, Shipped], major: int
) -> None:
    run = shipped[major].run
    docs = run.docs(query={"exists": {"field": "log.file.path"}})
    by_dataset = {d["event.dataset"]: 0 for d in docs}
    for doc in docs:
        by_dataset[doc["event.dataset"]] += 1
    assert by_dataset == {"jupyterhub": 5, "nginx.access": 4, "json": 2}
    assert sorted(d["message"] for d in docs if d["event.dataset"] == "json") == [
        "first", "third"
    ]  # fmt: skip
    lines = [
        d for d in run.dead_letters() if d["labels.target_index"].startswith(f"{NAME}-logs-json")
    ]
    (dead,) = lines
    assert dead["error.type"] == "document_parsing_exception"
    assert '"count":"many"' in dead["event.original"]


@pytest.mark.parametrize("major", MAJORS)
def test_the_indexer_indexes_and_dead_letters_through_the_same_output(
    shipped: dict[int, Shipped], major: int
) -> None:
    """Through the second of its nodes: the first is down."""
    registry = shipped[major].documents
    counts = {
        outcome: registry.get_sample_value("versions_documents_total", {"outcome": outcome})
        for outcome in ("indexed", "dead_lettered", "dropped")
    }
    assert counts == {"indexed": 1, "dead_lettered": 1, "dropped": 0}
    es = shipped[major].es
    (doc,) = search(es, f"{NAME}-logs-*", {"term": {"event.dataset": "hubkeeper.containers"}})
    assert doc["hubkeeper.container.memory.working_set.bytes"] == 128 * 2**20
    target = {"prefix": {"labels.target_index": f"{NAME}-logs-hubkeeper.containers-"}}
    (dead,) = search(es, f"{NAME}-dead-*", target)
    assert '"lots"' in dead["event.original"]


def test_the_templates_give_the_same_mappings_on_8_and_9(shipped: dict[int, Shipped]) -> None:
    """Flattened JSON keys, ``event.original`` stored but not indexed, the optional mapper
    types probed alike."""
    mappings = {}
    for major in MAJORS:
        url = f"{shipped[major].es.url}/{NAME}-logs-*,{NAME}-dead-*/_mapping"
        found = requests.get(url, timeout=30).json()
        mappings[major] = {name.rsplit("-", 1)[0]: m["mappings"] for name, m in found.items()}
    kinds = ("logs-jupyterhub", "logs-nginx.access", "logs-json", "logs-hubkeeper.containers")
    assert set(mappings[8]) == {f"{NAME}-{kind}" for kind in (*kinds, "dead")}
    assert mappings[8] == mappings[9]
    logs = mappings[8][f"{NAME}-logs-jupyterhub"]["properties"]
    assert logs["hubkeeper"]["properties"]["json"]["type"] == "flattened"
    original = logs["event"]["properties"]["original"]
    assert original == {"type": "keyword", "index": False, "doc_values": False}


def test_the_preview_answers_the_same_on_8_and_9(
    shipped: dict[int, Shipped], tmp_path: Path
) -> None:
    answers = {}
    for major in MAJORS:
        results = preview(tmp_path / str(major), shipped[major].es.url, f"{NAME}-logs")
        answers[major] = {
            dashboard: [(r.panel.id, r.points, r.rows) for r in panel_results]
            for dashboard, panel_results in results.items()
        }
        assert len(list((tmp_path / str(major)).glob("*.html"))) == len(results)
    assert answers[8] == answers[9]
    with_data = [p for panels in answers[8].values() for p in panels if p[1] or p[2]]
    assert len(with_data) >= 3
