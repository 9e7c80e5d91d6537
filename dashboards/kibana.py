"""Kibana saved objects (export NDJSON of 8.x and 9.x) from the panel definitions, and the
structural check the tests run on them.

Objects: one data view (``index-pattern``) over the shipper's daily indices, an
aggregation-based ``visualization`` per chart panel, a saved ``search`` per list panel,
a ``dashboard`` per dashboard. Ids derive from the definitions' names, so two exports are
identical; every object names what it uses in ``references``, as Kibana's own export does.
The data view carries the field formats (durations in milliseconds, bytes) that charts,
axes and lists use, as the preview does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from hubkeeper.dashboards.panels import DASHBOARDS, Dashboard, Metric, Panel, Split, kql, unit
from hubkeeper.shippers.mapping import log_fields

CORE_MIGRATION_VERSION = "8.8.0"
#: The attribute shapes are those of 8.0; on import Kibana migrates them forward to its own
#: version (``typeMigrationVersion`` itself needs Kibana 8.8 or newer).
TYPE_MIGRATION_VERSION = "8.0.0"
INDEX_REF = "kibanaSavedObjectMeta.searchSourceJSON.index"
LABEL_CHARS = 200  # category labels up to this length are shown whole
REQUIRED = {
    "index-pattern": ("title", "timeFieldName"),
    "visualization": ("title", "visState", "uiStateJSON", "kibanaSavedObjectMeta"),
    "search": ("title", "columns", "sort", "kibanaSavedObjectMeta"),
    "dashboard": ("title", "panelsJSON", "optionsJSON", "kibanaSavedObjectMeta"),
}
_VIS_TYPE = {"line": "line", "bar": "histogram", "pie": "pie", "metric": "metric"}
#: Kibana's field formats by unit (:func:`hubkeeper.dashboards.panels.unit`).
FIELD_FORMATS: dict[str, dict[str, Any]] = {
    "ns": {"id": "duration", "params": {
        "inputFormat": "nanoseconds", "outputFormat": "asMilliseconds", "outputPrecision": 1,
        "showSuffix": True, "useShortSuffix": True, "includeSpaceWithSuffix": True}},
    "bytes": {"id": "bytes", "params": {}},
}  # fmt: skip

SavedObject = dict[str, Any]


def data_view_id(index_prefix: str) -> str:
    return f"{index_prefix}-data-view"


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _object(kind: str, object_id: str, attributes: dict[str, Any], refs: list[dict]) -> SavedObject:
    return {
        "attributes": attributes,
        "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "id": object_id,
        "managed": False,
        "references": refs,
        "type": kind,
        "typeMigrationVersion": TYPE_MIGRATION_VERSION,
    }


def _search_source(query: str, index_prefix: str) -> tuple[dict[str, Any], list[dict]]:
    source = {
        "query": {"query": query, "language": "kuery"},
        "filter": [],
        "indexRefName": INDEX_REF,
    }
    meta = {"searchSourceJSON": _dump(source)}
    ref = {"id": data_view_id(index_prefix), "name": INDEX_REF, "type": "index-pattern"}
    return meta, [ref]


def field_formats() -> dict[str, dict[str, Any]]:
    """The data view's ``fieldFormatMap``: every mapped numeric field that has a unit."""
    numeric = {"long", "double"}
    return {
        name: FIELD_FORMATS[unit(name)]
        for name, mapping in sorted(log_fields().items())
        if mapping["type"] in numeric and unit(name)
    }


def data_view(index_prefix: str) -> SavedObject:
    return _object(
        "index-pattern",
        data_view_id(index_prefix),
        {
            "title": f"{index_prefix}-*",
            "name": f"hubkeeper logs ({index_prefix}-*)",
            "timeFieldName": "@timestamp",
            "allowNoIndex": True,
            "fieldFormatMap": _dump(field_formats()),
        },
        [],
    )


def _metric_agg(metric: Metric) -> dict[str, Any]:
    agg: dict[str, Any] = {"id": "1", "enabled": True, "schema": "metric", "params": {}}
    if metric.kind == "count":
        return {**agg, "type": "count"}
    kind = {"unique": "cardinality"}.get(metric.kind, metric.kind)
    agg.update(type=kind, params={"field": metric.field, "customLabel": metric.label})
    if metric.kind == "percentiles":
        agg["params"]["percents"] = list(metric.percents)
    return agg


def _split_agg(split: Split, agg_id: str, schema: str) -> dict[str, Any]:
    params: dict[str, Any]
    kind = split.kind
    if kind == "time":
        kind = "date_histogram"
        params = {"field": split.field, "interval": "auto", "min_doc_count": 1}
        params["extended_bounds"] = {}
    elif kind == "terms":
        params = {"field": split.field, "size": split.size, "order": "desc", "orderBy": "1"}
        params.update(otherBucket=False, missingBucket=False)
    elif kind == "range":
        params = {  # the label names the bucket in the legend (and keys its colour)
            "field": split.field,
            "ranges": [{"from": a, "to": b, "label": label} for a, b, label in split.ranges],
        }
    elif kind == "histogram":
        params = {"field": split.field, "interval": split.interval, "min_doc_count": False}
        params["extended_bounds"] = {}
    else:
        params = {
            "filters": [
                {"input": {"query": c.kql(), "language": "kuery"}, "label": label}
                for label, c in split.filters
            ]
        }
    return {"id": agg_id, "enabled": True, "type": kind, "schema": schema, "params": params}


def _vis_params(panel: Panel) -> dict[str, Any]:
    if panel.chart == "metric":
        return {"addTooltip": True, "addLegend": False, "type": "metric",
                "metric": {"colorSchema": "Green to Red", "useRanges": False,
                           "labels": {"show": True}, "style": {"fontSize": 48}}}  # fmt: skip
    if panel.chart == "pie":
        return {"type": "pie", "addTooltip": True, "addLegend": True,
                "legendPosition": "right", "isDonut": True,
                "labels": {"show": True, "values": True, "last_level": True,
                           "truncate": 100}}  # fmt: skip
    kind = _VIS_TYPE[panel.chart]
    category, value = ("left", "bottom") if panel.horizontal else ("bottom", "left")
    return {
        "type": _vis_type(panel),
        "addTooltip": True,
        "addLegend": True,
        "legendPosition": "right",
        "times": [],
        "addTimeMarker": False,
        "grid": {"categoryLines": False},
        "categoryAxes": [{"id": "CategoryAxis-1", "type": "category", "position": category,
                          "show": True, "scale": {"type": "linear"},
                          "labels": {"show": True, "rotate": 0,
                                     "filter": not panel.horizontal, "truncate": LABEL_CHARS},
                          "title": {}}],
        "valueAxes": [{"id": "ValueAxis-1", "name": f"{value.capitalize()}Axis-1",
                       "type": "value", "position": value, "show": True,
                       "scale": {"type": "linear", "mode": "normal"},
                       "labels": {"show": True, "rotate": 0, "filter": True, "truncate": 100},
                       "title": {"text": panel.metric.label}}],
        "seriesParams": [{"show": True, "type": kind,
                          "mode": "stacked" if panel.stacked else "normal",
                          "data": {"label": panel.metric.label, "id": "1"},
                          "valueAxis": "ValueAxis-1", "drawLinesBetweenPoints": True,
                          "lineWidth": 2, "showCircles": True, "interpolate": "linear"}],
    }  # fmt: skip


def _vis_type(panel: Panel) -> str:
    return "horizontal_bar" if panel.horizontal else _VIS_TYPE[panel.chart]


def _ui_state(panel: Panel) -> dict[str, Any]:
    """Fixed legend colours (``vis.colors``, by bucket label) of the split that names the
    series, or the slices of a pie."""
    split = panel.x if panel.chart == "pie" else panel.series
    colors = dict(split.colors) if split is not None else {}
    return {"vis": {"colors": colors}} if colors else {}


def visualization(dashboard: Dashboard, panel: Panel, index_prefix: str) -> SavedObject:
    aggs = [_metric_agg(panel.metric)]
    if panel.x is not None:
        aggs.append(_split_agg(panel.x, "2", "segment"))
    if panel.series is not None:
        aggs.append(_split_agg(panel.series, "3", "group" if panel.chart != "pie" else "segment"))
    vis_state = {
        "title": panel.title,
        "type": _vis_type(panel),
        "aggs": aggs,
        "params": _vis_params(panel),
    }
    meta, refs = _search_source(kql(panel.where), index_prefix)
    attributes = {
        "title": panel.title,
        "description": "",
        "visState": _dump(vis_state),
        "uiStateJSON": _dump(_ui_state(panel)),
        "version": 1,
        "kibanaSavedObjectMeta": meta,
    }
    return _object("visualization", panel_id(dashboard, panel), attributes, refs)


def saved_search(dashboard: Dashboard, panel: Panel, index_prefix: str) -> SavedObject:
    meta, refs = _search_source(kql(panel.where), index_prefix)
    attributes = {
        "title": panel.title,
        "description": "",
        "columns": list(panel.columns),
        "sort": [["@timestamp", "desc"]],
        "kibanaSavedObjectMeta": meta,
    }
    return _object("search", panel_id(dashboard, panel), attributes, refs)


def panel_id(dashboard: Dashboard, panel: Panel) -> str:
    return f"{dashboard.id}-{panel.id}"


def panel_type(panel: Panel) -> str:
    return "search" if panel.chart == "search" else "visualization"


def dashboard_object(dashboard: Dashboard) -> SavedObject:
    panels, refs = [], []
    for number, (panel, grid) in enumerate(dashboard.layout(), start=1):
        index = str(number)
        panels.append({
            "version": CORE_MIGRATION_VERSION,
            "type": panel_type(panel),
            "gridData": {**grid, "i": index},
            "panelIndex": index,
            "embeddableConfig": {},
            "panelRefName": f"panel_{index}",
        })  # fmt: skip
        refs.append({"id": panel_id(dashboard, panel), "name": f"panel_{index}",
                     "type": panel_type(panel)})  # fmt: skip
    attributes = {
        "title": dashboard.title,
        "description": dashboard.description,
        "panelsJSON": _dump(panels),
        "optionsJSON": _dump({"useMargins": True, "syncColors": False, "hidePanelTitles": False}),
        "timeRestore": True,
        "timeFrom": "now-24h",
        "timeTo": "now",
        "refreshInterval": {"pause": False, "value": 60000},
        "version": 1,
        "kibanaSavedObjectMeta": {
            "searchSourceJSON": _dump({"query": {"query": "", "language": "kuery"}, "filter": []})
        },
    }
    return _object("dashboard", dashboard.id, attributes, refs)


def saved_objects(
    index_prefix: str = "hubkeeper-logs", dashboards: Sequence[Dashboard] = DASHBOARDS
) -> list[SavedObject]:
    """Every object, dependencies first (as Kibana's export orders them)."""
    objects = [data_view(index_prefix)]
    for dashboard in dashboards:
        for panel in dashboard.panels:
            build = saved_search if panel.chart == "search" else visualization
            objects.append(build(dashboard, panel, index_prefix))
        objects.append(dashboard_object(dashboard))
    return objects


def to_ndjson(objects: Iterable[SavedObject]) -> str:
    """Export NDJSON: one object a line, then Kibana's export summary line."""
    items = list(objects)
    summary = {
        "excludedObjects": [],
        "excludedObjectsCount": 0,
        "exportedCount": len(items),
        "missingRefCount": 0,
        "missingReferences": [],
    }
    return "".join(_dump(item) + "\n" for item in [*items, summary])


# --- the structural check ------------------------------------------------------------------


def check(ndjson: str) -> list[str]:
    """Problems with an export: lines that are not JSON objects, missing attributes, JSON
    attributes that do not parse, references to objects not in the file, duplicate ids,
    dashboard panels without their reference, a wrong summary line. Empty: fine."""
    lines = [line for line in ndjson.splitlines() if line.strip()]
    if not lines:
        return ["the file is empty"]
    try:
        rows = [json.loads(line) for line in lines]
    except ValueError as error:
        return [f"not JSON: {error}"]
    if not all(isinstance(row, dict) for row in rows):
        return ["a line is not a JSON object"]
    *objects, summary = rows
    problems: list[str] = []
    if summary.get("exportedCount") != len(objects) or "attributes" in summary:
        problems.append("the last line is not an export summary counting the objects")
    keys = [(o.get("type"), o.get("id")) for o in objects]
    problems += [f"duplicate id {k}" for k in sorted(set(keys), key=str) if keys.count(k) > 1]
    known = set(keys)
    for obj in objects:
        problems += _check_object(obj, known)
    return problems


def _check_object(obj: SavedObject, known: set[tuple[Any, Any]]) -> list[str]:
    where = f"{obj.get('type')}/{obj.get('id')}"
    kind = obj.get("type")
    if kind not in REQUIRED or not obj.get("id"):
        return [f"{where}: unknown type or no id"]
    attributes = obj.get("attributes") or {}
    problems = [f"{where}: no {name}" for name in REQUIRED[kind] if name not in attributes]
    parsed: dict[str, Any] = {}
    for name, value in _json_attributes(attributes):
        try:
            parsed[name] = json.loads(value)
        except (TypeError, ValueError):
            problems.append(f"{where}: {name} does not parse")
    ref_names = set()
    for ref in obj.get("references", []):
        ref_names.add(ref.get("name"))
        if (ref.get("type"), ref.get("id")) not in known:
            problems.append(f"{where}: reference {ref.get('name')} -> {ref.get('id')} not in file")
    source = parsed.get("kibanaSavedObjectMeta.searchSourceJSON", {})
    if "indexRefName" in source and source["indexRefName"] not in ref_names:
        problems.append(f"{where}: indexRefName {source['indexRefName']} has no reference")
    for panel in parsed.get("panelsJSON", []) if isinstance(parsed.get("panelsJSON"), list) else []:
        if panel.get("panelRefName") not in ref_names:
            problems.append(f"{where}: panel {panel.get('panelIndex')} has no reference")
    if kind == "visualization" and not isinstance(parsed.get("visState", {}).get("aggs"), list):
        problems.append(f"{where}: visState has no aggs")
    return problems


def _json_attributes(attributes: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Every ``*JSON`` attribute (and ``visState``, ``fieldFormatMap``), nested ones by
    dotted name."""
    for name, value in attributes.items():
        if isinstance(value, dict):
            yield from _json_attributes(value, f"{prefix}{name}.")
        elif name.endswith("JSON") or name in ("visState", "fieldFormatMap"):
            yield f"{prefix}{name}", value
