"""The dashboard definitions and their pure builders: KQL and query DSL, layout, Kibana
saved objects and their structural check, preview queries and HTML."""

import json
import re
import socket
import subprocess
import sys

import pytest

from hubkeeper.config import ShipperElasticsearchConfig
from hubkeeper.dashboards.auth import Credentials, CredentialsError
from hubkeeper.dashboards.kibana import check, data_view, saved_objects, to_ndjson
from hubkeeper.dashboards.load import LoadError, import_url, load
from hubkeeper.dashboards.panels import (
    AMBER,
    BLUE,
    DASHBOARDS,
    GREEN,
    HUB_OVERVIEW,
    RED,
    STATUS_CLASSES,
    AnyOf,
    Metric,
    Panel,
    Split,
    Where,
    kql,
)
from hubkeeper.dashboards.preview import (
    PreviewError,
    Result,
    format_value,
    parse,
    preview,
    render_page,
    render_panel,
    search_body,
)
from hubkeeper.shippers.mapping import OPTIONAL_TYPES, log_fields, templates

PANELS = [(d, p) for d in DASHBOARDS for p in d.panels]


def test_conditions_as_kql_and_dsl() -> None:
    status = Where("http.response.status_code", gte=500)
    either = AnyOf((status, Where("event.action", ("spawn", "stop"))))
    assert kql((Where("event.dataset", ("nginx.access",)), either)) == (
        'event.dataset:"nginx.access" and ((http.response.status_code >= 500) or '
        '(event.action:("spawn" or "stop")))'
    )
    assert Where("message", phrase='say "hi"').kql() == 'message:"say \\"hi\\""'
    assert Where("error.type").kql() == "error.type:*"
    assert (
        Where("event.duration", gte=1, lt=2.5).kql()
        == "event.duration >= 1 and event.duration < 2.5"
    )
    assert either.dsl() == {
        "bool": {
            "should": [
                {"range": {"http.response.status_code": {"gte": 500}}},
                {"terms": {"event.action": ["spawn", "stop"]}},
            ],
            "minimum_should_match": 1,
        }
    }
    assert Where("error.type").dsl() == {"exists": {"field": "error.type"}}
    assert Where("message", phrase="x").dsl() == {"match_phrase": {"message": "x"}}


AGGREGATABLE = {"keyword", "wildcard", "long", "double", "boolean", "date", "ip"}


@pytest.mark.parametrize("supported", [frozenset(), frozenset(OPTIONAL_TYPES)])
def test_panels_use_fields_the_shipper_maps_with_the_right_type(supported: frozenset) -> None:
    """On a cluster with or without the optional mappers: panels aggregate on mapped,
    aggregatable fields (never a subfield of the flattened hubkeeper.json, which Kibana's
    data views do not list), search phrases in text, and show mapped columns."""
    fields = log_fields(supported)

    def mapped(name: str) -> str:
        return fields[name]["type"] if name in fields else "unmapped"

    for _, panel in PANELS:
        aggregated, searched = panel.fields()
        for name in aggregated:
            assert mapped(name) in AGGREGATABLE, f"{panel.id} aggregates on {name}"
        for name in searched:
            assert mapped(name) in ("text", "match_only_text"), f"{panel.id} searches {name}"
        for name in panel.columns:
            assert mapped(name) != "unmapped", f"{panel.id} shows {name}"
        if panel.chart == "search":
            assert panel.columns and panel.x is None


def test_every_field_a_panel_uses_is_in_the_index_template_itself() -> None:
    """A Kibana data view lists only mapped fields, and fails a panel whose field it does not
    list: every field a panel aggregates, filters, searches or shows is in the template's
    own properties (not left to a dynamic template), so it is there in every new index."""
    template = templates(ShipperElasticsearchConfig())["hubkeeper-logs"]
    root = template["template"]["mappings"]["properties"]

    def in_template(name: str) -> bool:
        node: dict = {"properties": root}
        for part in [name] if name == "@timestamp" else name.split("."):
            node = node.get("properties", {}).get(part, {})
        return "type" in node

    used = {"@timestamp"}
    for _, panel in PANELS:
        aggregated, searched = panel.fields()
        used |= aggregated | searched | set(panel.columns)
    assert {"labels.spawn_failure", "labels.jupyterhub_user", "labels.hub"} <= used
    assert sorted(name for name in used if not in_template(name)) == []


def test_data_view_formats_durations_in_milliseconds_and_bytes() -> None:
    formats = json.loads(data_view("hubkeeper-logs")["attributes"]["fieldFormatMap"])
    duration = formats["event.duration"]
    assert duration["id"] == "duration"
    assert duration["params"]["inputFormat"] == "nanoseconds"
    assert duration["params"]["outputFormat"] == "asMilliseconds"
    numeric = {n for n, m in log_fields().items() if m["type"] in ("long", "double")}
    byte_fields = {n for n in numeric if n.endswith(".bytes")}
    assert "hubkeeper.container.memory.working_set.bytes" in byte_fields
    assert {n for n, f in formats.items() if f["id"] == "bytes"} == byte_fields
    assert set(formats) == byte_fields | {"event.duration"}


def _vis(panel_id: str) -> tuple[dict, dict]:
    """visState and uiState of a panel's visualization."""
    (obj,) = [o for o in saved_objects() if o["id"].endswith(f"-{panel_id}")]
    attributes = obj["attributes"]
    return json.loads(attributes["visState"]), json.loads(attributes["uiStateJSON"])


def test_kibana_status_classes_labels_colours_captions_stacks_and_flat_bars() -> None:
    state, ui = _vis("requests-by-status")
    (ranges,) = [a["params"]["ranges"] for a in state["aggs"] if a["type"] == "range"]
    assert [r["label"] for r in ranges] == ["1xx", "2xx", "3xx", "4xx", "5xx"]
    assert ranges[1] == {"from": 200, "to": 300, "label": "2xx"}
    colors = ui["vis"]["colors"]
    assert (colors["2xx"], colors["3xx"], colors["4xx"], colors["5xx"]) == (GREEN, BLUE, AMBER, RED)
    state, _ = _vis("active-users")
    assert state["type"] == "metric" and state["params"]["metric"]["labels"]["show"] is True
    state, ui = _vis("spawns-over-time")
    assert state["params"]["seriesParams"][0]["mode"] == "stacked"
    assert ui["vis"]["colors"] == {"succeeded": GREEN, "failed": RED, "stopped": "#98A2B3"}
    state, _ = _vis("hub-latency")
    assert state["params"]["seriesParams"][0]["mode"] == "normal"  # percentiles never stack
    state, _ = _vis("top-endpoints")
    assert state["type"] == "horizontal_bar"
    (axis,) = state["params"]["categoryAxes"]
    assert axis["position"] == "left" and axis["labels"]["truncate"] >= 200
    assert not axis["labels"]["filter"]  # every endpoint gets its label


def test_numbers_read_at_a_glance() -> None:
    assert format_value(2_667_410_000, "ns") == "2,667 ms"
    assert format_value(3_400_000, "ns") == "3.4 ms"
    assert format_value(536_870_912, "bytes") == "512 MiB"
    assert format_value(100 * 2**20, "bytes", like=2**30) == "0.1 GiB"
    assert format_value(2_667_410_000) == "2,667,410,000"
    assert format_value(0.5) == "0.5" and format_value(12.25) == "12.2"


def _status_result(codes: dict[str, float]) -> Result:
    (panel,) = [p for p in HUB_OVERVIEW.panels if p.id == "requests-by-status"]
    return Result(panel, [(f"2025-01-05T10:0{i}:00.000Z", c, v)
                          for i in range(3) for c, v in codes.items()], [])  # fmt: skip


def test_preview_status_classes_in_their_colours_and_units_on_the_axes() -> None:
    svg = render_panel(_status_result({"2xx": 120.0, "4xx": 3.0, "5xx": 1.0}))
    fills = dict(re.findall(r'class="point" data-value="[^"]*" fill="(#\w+)"><title>(\w+)', svg))
    assert {fills[GREEN], fills[AMBER], fills[RED]} == {"2xx", "4xx", "5xx"} and BLUE not in fills
    assert dict(STATUS_CLASSES.colors)["3xx"] == BLUE
    (latency,) = [p for p in HUB_OVERVIEW.panels if p.id == "hub-latency"]
    points = [("2025-01-05T10:00:00.000Z", f"p{p}", v * 1e6) for p, v in ((50, 8), (99, 2667.41))]
    svg = render_panel(Result(latency, points, []))
    ticks = re.findall(r">([\d,.]+ ms)</text>", svg)
    assert ticks[0] == "0 ms" and ticks[-1] == "3,000 ms", ticks
    assert "e+" not in svg and "2,667 ms" in svg  # the tooltip


def test_preview_labels_whole_and_split_bars_stacked() -> None:
    (refused,) = [p for p in HUB_OVERVIEW.panels if p.id == "refused-requests"]
    long = "Specifying image to launch is not allowed: debian:bookworm is not in the list"
    result = Result(refused, [(long, "400", 2.0), (long, "403", 3.0), ("short", "403", 1.0)], [])
    svg = render_panel(result)
    shown = re.findall(r'text-anchor="end">([^<]*)</text>', svg)  # beside the bars
    assert " ".join(shown[:-1]) == long and shown[-1] == "short"  # whole, wrapped
    assert max(map(len, shown)) <= 40
    bars = re.findall(r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)"[^>]*class="point"', svg)
    first, second = (b for b in bars if b[1] == bars[0][1])  # one row: two segments
    assert float(first[0]) + float(first[2]) == pytest.approx(float(second[0]), abs=0.2)


def test_ids_unique_and_layout_inside_the_grid_without_overlap() -> None:
    assert len({d.id for d in DASHBOARDS}) == len(DASHBOARDS) == 4
    for dashboard in DASHBOARDS:
        assert len({p.id for p in dashboard.panels}) == len(dashboard.panels)
        cells: set[tuple[int, int]] = set()
        for _, grid in dashboard.layout():
            assert grid["x"] + grid["w"] <= 48
            mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                    for y in range(grid["y"], grid["y"] + grid["h"])}  # fmt: skip
            assert not cells & mine
            cells |= mine


def test_export_is_stable_complete_and_passes_the_check() -> None:
    first, second = to_ndjson(saved_objects()), to_ndjson(saved_objects())
    assert first == second
    assert check(first) == []
    objects = [json.loads(line) for line in first.splitlines()][:-1]
    by_type: dict[str, list[dict]] = {}
    for obj in objects:
        by_type.setdefault(obj["type"], []).append(obj)
    assert len(by_type["index-pattern"]) == 1
    assert by_type["index-pattern"][0]["attributes"]["title"] == "hubkeeper-logs-*"
    assert len(by_type["dashboard"]) == 4
    charts = sum(p.chart != "search" for _, p in PANELS)
    assert len(by_type["visualization"]) == charts
    assert len(by_type["search"]) == len(PANELS) - charts
    for dash in by_type["dashboard"]:
        panels = json.loads(dash["attributes"]["panelsJSON"])
        assert len(panels) == len(dash["references"]) > 0
    other = to_ndjson(saved_objects("site-logs"))
    assert check(other) == [] and '"title":"site-logs-*"' in other


def _broken(change) -> list[str]:
    objects = saved_objects()
    change(objects)
    return check(to_ndjson(objects))


def test_check_finds_broken_json_dangling_references_duplicates_and_gaps() -> None:
    def bad_json(objects: list[dict]) -> None:
        objects[1]["attributes"]["visState"] = "{not json"

    def dangling(objects: list[dict]) -> None:
        objects[-1]["references"][0]["id"] = "nowhere"

    def duplicate(objects: list[dict]) -> None:
        objects.append(objects[1])

    def missing(objects: list[dict]) -> None:
        del objects[-1]["attributes"]["panelsJSON"]

    def unreferenced_panel(objects: list[dict]) -> None:
        objects[-1]["references"].pop()

    assert any("visState does not parse" in p for p in _broken(bad_json))
    assert any("nowhere not in file" in p for p in _broken(dangling))
    assert any("duplicate id" in p for p in _broken(duplicate))
    assert any("no panelsJSON" in p for p in _broken(missing))
    assert any("has no reference" in p for p in _broken(unreferenced_panel))
    assert check("") == ["the file is empty"]
    assert check("[]\n") == ["a line is not a JSON object"]
    assert check("{\n")[0].startswith("not JSON")


SPLIT_PANEL = Panel(
    "p", "Latency <by> user", "line", (Where("event.dataset", ("jupyterhub",)),),
    Metric("percentiles", "event.duration", percents=(50.0, 99.0)),
    x=Split("time"), series=Split("terms", "user.name", size=3),
)  # fmt: skip


def test_search_body_nests_series_under_x_and_metric_under_both() -> None:
    body = search_body(SPLIT_PANEL, since="now-1h", interval=30)
    assert body["size"] == 0
    filters = body["query"]["bool"]["filter"]
    assert {"terms": {"event.dataset": ["jupyterhub"]}} in filters
    assert {"range": {"@timestamp": {"gte": "now-1h"}}} in filters
    x = body["aggs"]["x"]
    assert x["date_histogram"]["fixed_interval"] == "30s"
    assert x["aggs"]["s"]["terms"] == {"field": "user.name", "size": 3}
    assert x["aggs"]["s"]["aggs"]["m"]["percentiles"]["percents"] == [50.0, 99.0]


def test_parse_and_render_a_page_with_points_and_escaped_titles() -> None:
    answer = {
        "hits": {"total": {"value": 3}, "hits": []},
        "aggregations": {"x": {"buckets": [
            {"key": 1, "key_as_string": "t1", "doc_count": 3, "s": {"buckets": [
                {"key": "ann", "doc_count": 3, "m": {"values": {"50.0": 5.0, "99.0": 9.0}}},
            ]}},
        ]}},
    }  # fmt: skip
    result = parse(SPLIT_PANEL, answer)
    assert result.points == [("t1", "p50", 5.0), ("t1", "p99", 9.0)]
    empty = Result(Panel("e", "Nothing", "metric"), [("", "Count", 0.0)], [])
    assert empty.empty and not result.empty
    page = render_page(DASHBOARDS[0], [result, empty], "now")
    assert "Latency &lt;by&gt; user" in page and "<by>" not in page
    assert page.count('class="point"') == 2 and 'class="empty"' in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")


def test_a_search_that_matched_no_index_gives_empty_panels() -> None:
    """A new cluster (`hubkeeper up` renders the preview at once) answers without aggregations."""
    answer = {"hits": {"total": {"value": 0}, "hits": []}}
    for panel in [SPLIT_PANEL, *(p for d in DASHBOARDS for p in d.panels)]:
        assert parse(panel, answer).empty, panel.id


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_load_reports_an_unreachable_kibana(tmp_path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(LoadError, match=f"Kibana unreachable at {url}"):
        load(to_ndjson(saved_objects()), url, timeout=5)
    key = tmp_path / "key"
    key.write_text("c2VjcmV0\n")
    result = subprocess.run(
        [sys.executable, "-m", "hubkeeper.cli", "dashboards", "load", "--kibana", url,
         "--space", "ops", "--api-key-file", str(key)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith(f"load failed: Kibana unreachable at {url}")
    assert "c2VjcmV0" not in result.stderr + result.stdout


def test_load_credentials_and_space_urls(tmp_path) -> None:
    with pytest.raises(CredentialsError, match="needs --password-file"):
        Credentials.from_files(None, "ops", None)
    with pytest.raises(CredentialsError, match="cannot read"):
        Credentials.from_files(tmp_path / "absent", None, None)
    (tmp_path / "key").write_text("a2V5\n")
    (tmp_path / "password").write_text("s3cret\n")
    keyed = Credentials.from_files(tmp_path / "key", None, None).session()
    assert keyed.headers["Authorization"] == "ApiKey a2V5" and keyed.auth is None
    basic = Credentials.from_files(None, "ops", tmp_path / "password").session()
    assert basic.auth == ("ops", "s3cret") and "Authorization" not in basic.headers
    assert import_url("http://k:5601/", None) == "http://k:5601/api/saved_objects/_import"
    assert import_url("http://k", "ops") == "http://k/s/ops/api/saved_objects/_import"
    assert import_url("http://k", "default") == "http://k/api/saved_objects/_import"


def test_export_command_writes_the_file(tmp_path) -> None:
    target = tmp_path / "dash.ndjson"
    command = [sys.executable, "-m", "hubkeeper.cli", "dashboards", "export", str(target)]
    subprocess.run([*command, "--index-prefix", "lab-logs"], check=True, timeout=60)
    text = target.read_text()
    assert check(text) == [] and '"title":"lab-logs-*"' in text


def test_preview_reports_an_unreachable_elasticsearch(tmp_path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(PreviewError, match=f"Elasticsearch unreachable at {url}"):
        preview(tmp_path / "out", url)
    assert not list((tmp_path / "out").glob("*.html"))
