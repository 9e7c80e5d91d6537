"""The preview without Kibana: every panel's query against Elasticsearch, one static HTML
page per dashboard with inline SVG charts (no scripts, no external assets)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from dashboards.panels import DASHBOARDS, Dashboard, Metric, Panel, Split, dsl

SEARCH_ROWS = 20
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")


class PreviewError(Exception):
    """Elasticsearch could not be asked, or refused a panel's query."""


# --- queries -------------------------------------------------------------------------------


def _split_dsl(split: Split, interval: int) -> dict[str, Any]:
    if split.kind == "time":  # (the auto_date_histogram module is not in every cluster)
        return {"date_histogram": {"field": split.field, "fixed_interval": f"{interval}s",
                                   "min_doc_count": 1}}  # fmt: skip
    if split.kind == "terms":
        return {"terms": {"field": split.field, "size": split.size}}
    if split.kind == "range":
        ranges = [{"key": k, "from": a, "to": b} for a, b, k in split.ranges]
        return {"range": {"field": split.field, "ranges": ranges}}
    if split.kind == "histogram":
        return {"histogram": {"field": split.field, "interval": split.interval}}
    return {"filters": {"filters": {label: c.dsl() for label, c in split.filters}}}


def _metric_dsl(metric: Metric) -> dict[str, Any]:
    if metric.kind == "count":
        return {}
    if metric.kind == "percentiles":
        return {"m": {"percentiles": {"field": metric.field, "percents": list(metric.percents)}}}
    kind = {"unique": "cardinality"}.get(metric.kind, metric.kind)
    return {"m": {kind: {"field": metric.field}}}


def search_body(panel: Panel, since: str = "now-24h", interval: int = 60) -> dict[str, Any]:
    """The Elasticsearch request of a panel (the same filters as its KQL in Kibana);
    time buckets of ``interval`` seconds."""
    query = {"bool": {"filter": [*dsl(panel.where), {"range": {"@timestamp": {"gte": since}}}]}}
    if panel.chart == "search":
        return {"size": SEARCH_ROWS, "query": query, "sort": [{"@timestamp": "desc"}],
                "_source": False, "fields": ["@timestamp", *panel.columns]}  # fmt: skip
    aggs = _metric_dsl(panel.metric)
    for split, name in ((panel.series, "s"), (panel.x, "x")):
        if split is not None:
            aggs = {name: {**_split_dsl(split, interval), **({"aggs": aggs} if aggs else {})}}
    return {"size": 0, "query": query, "aggs": aggs, "track_total_hits": True}


@dataclass
class Result:
    """A panel's answer: points ``(x, series, value)``, or rows for a search panel."""

    panel: Panel
    points: list[tuple[str, str, float]]
    rows: list[dict[str, Any]]

    @property
    def empty(self) -> bool:
        return not self.rows and not any(value for _, _, value in self.points)


def _buckets(agg: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    buckets = agg["buckets"]
    if isinstance(buckets, dict):  # filters
        return list(buckets.items())
    return [(str(b.get("key_as_string", b["key"])), b) for b in buckets]


def _values(metric: Metric, bucket: dict[str, Any], series: str) -> list[tuple[str, float]]:
    if metric.kind == "count":
        return [(series, float(bucket["doc_count"]))]
    found = bucket["m"]
    if metric.kind == "percentiles":
        return [
            (f"p{float(p):g}", float(v or 0)) for p, v in found["values"].items() if v is not None
        ]
    return [(series, float(found["value"] or 0))]


def parse(panel: Panel, answer: dict[str, Any]) -> Result:
    """Points or rows out of a search response."""
    if panel.chart == "search":
        return Result(panel, [], [_row(hit) for hit in answer["hits"]["hits"]])
    aggs = answer.get("aggregations")
    if aggs is None:  # a plain count asks for none; no matching index yet answers none
        if answer["hits"]["total"]["value"] == 0:
            return Result(panel, [], [])
        aggs = {}
    outer = _buckets(aggs["x"]) if panel.x is not None else [("", answer_total(answer, aggs))]
    points = []
    for x_label, bucket in outer:
        inner = (
            _buckets(bucket["s"]) if panel.series is not None else [(panel.metric.label, bucket)]
        )
        for series, leaf in inner:
            points += [
                (x_label, name, value) for name, value in _values(panel.metric, leaf, series)
            ]
    return Result(panel, points, [])


def _row(hit: dict[str, Any]) -> dict[str, Any]:
    """A hit's ``fields`` (dotted names, flat or nested in the source alike) as cells."""
    return {name: ", ".join(map(str, values)) for name, values in hit.get("fields", {}).items()}


def answer_total(answer: dict[str, Any], aggs: dict[str, Any]) -> dict[str, Any]:
    """The whole result as one bucket (a panel without ``x``)."""
    return {"doc_count": answer["hits"]["total"]["value"], **aggs}


def _search(
    session: requests.Session, elasticsearch: str, index: str, body: dict[str, Any], what: str
) -> dict[str, Any]:
    url = f"{elasticsearch.rstrip('/')}/{index}/_search"
    try:
        response = session.post(
            url, json=body, timeout=30,
            params={"ignore_unavailable": "true", "allow_no_indices": "true"},
        )  # fmt: skip
    except requests.RequestException as error:
        raise PreviewError(f"Elasticsearch unreachable at {elasticsearch}: {error}") from None
    if response.status_code != 200:
        raise PreviewError(f"{what}: HTTP {response.status_code}: {response.text[:500]}")
    return response.json()


def time_interval(
    session: requests.Session, elasticsearch: str, index: str, since: str, buckets: int = 40
) -> int:
    """Seconds per time bucket: about ``buckets`` over the span the data covers."""
    body = {
        "size": 0,
        "query": {"range": {"@timestamp": {"gte": since}}},
        "aggs": {
            "first": {"min": {"field": "@timestamp"}},
            "last": {"max": {"field": "@timestamp"}},
        },
    }
    aggs = _search(session, elasticsearch, index, body, "time range").get("aggregations", {})
    first, last = (aggs.get(k, {}).get("value") for k in ("first", "last"))
    span = (last - first) / 1000 if first is not None and last is not None else 0
    return max(1, math.ceil(span / buckets))


def run(
    panel: Panel,
    elasticsearch: str,
    index: str,
    since: str = "now-24h",
    interval: int = 60,
    session: requests.Session | None = None,
) -> Result:
    """A panel's query against Elasticsearch. Raises :class:`PreviewError`."""
    body = search_body(panel, since, interval)
    answer = _search(
        session or requests.Session(), elasticsearch, index, body, f"panel {panel.id!r}"
    )
    return parse(panel, answer)


# --- SVG and HTML --------------------------------------------------------------------------

WIDTH, HEIGHT, PAD = 640, 240, 40


def _series(points: Sequence[tuple[str, str, float]]) -> tuple[list[str], dict[str, dict]]:
    xs: list[str] = []
    series: dict[str, dict[str, float]] = {}
    for x, name, value in points:
        if x not in xs:
            xs.append(x)
        series.setdefault(name, {})[x] = value
    return xs, series


def _point(x: float, y: float, name: str, label: str, value: float, color: str) -> str:
    title = html.escape(f"{name} {label}: {value:g}")
    return (f'<circle class="point" data-value="{value:g}" cx="{x:.1f}" cy="{y:.1f}" r="3" '
            f'fill="{color}"><title>{title}</title></circle>')  # fmt: skip


def _axes(top: float, xs: list[str], ends: bool) -> str:
    first, last = (html.escape(xs[0][:24]), html.escape(xs[-1][:24])) if ends else ("", "")
    return (
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - 10}" y2="{HEIGHT - PAD}" '
        f'stroke="#888"/><line x1="{PAD}" y1="10" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>'
        f'<text x="2" y="18" font-size="11">{top:g}</text>'
        f'<text x="{PAD}" y="{HEIGHT - 22}" font-size="10">{first}</text>'
        f'<text x="{WIDTH - 10}" y="{HEIGHT - 22}" font-size="10" text-anchor="end">{last}</text>'
    )


def _legend(names: Sequence[str]) -> str:
    return "".join(
        f'<rect x="{PAD + 110 * i}" y="{HEIGHT - 14}" width="10" height="10" '
        f'fill="{COLORS[i % len(COLORS)]}"/><text x="{PAD + 14 + 110 * i}" y="{HEIGHT - 5}" '
        f'font-size="11">{html.escape(name[:16])}</text>'
        for i, name in enumerate(names)
    )


def _xy(result: Result, bars: bool) -> str:
    xs, series = _series(result.points)
    top = max((v for _, _, v in result.points), default=0.0) or 1.0
    plot_w, plot_h = WIDTH - PAD - 10, HEIGHT - PAD - 10
    slot = plot_w / max(len(xs), 1)
    over_time = result.panel.x is not None and result.panel.x.kind == "time"
    parts = [_axes(top, xs, ends=bool(xs) and over_time)]
    for number, (name, values) in enumerate(series.items()):
        color = COLORS[number % len(COLORS)]
        coords = []
        for index, x in enumerate(xs):
            if x not in values:
                continue
            value = values[x]
            y = 10 + plot_h * (1 - value / top)
            if bars:
                bar_w = slot * 0.8 / len(series)
                left = PAD + slot * index + slot * 0.1 + bar_w * number
                parts.append(f'<rect x="{left:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                             f'height="{HEIGHT - PAD - y:.1f}" fill="{color}"/>')  # fmt: skip
                parts.append(_point(left + bar_w / 2, y, name, x, value, color))
            else:
                cx = PAD + slot * (index + 0.5)
                coords.append(f"{cx:.1f},{y:.1f}")
                parts.append(_point(cx, y, name, x, value, color))
        if coords:
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                         f'points="{" ".join(coords)}"/>')  # fmt: skip
    if not over_time:  # categories: a label under each
        room = max(3, int(slot / 6))
        parts += [
            f'<text x="{PAD + slot * (i + 0.5):.1f}" y="{HEIGHT - PAD + 12}" font-size="9" '
            f'text-anchor="middle">{html.escape(x[-room:])}<title>{html.escape(x)}</title></text>'
            for i, x in enumerate(xs)
        ]
    parts.append(_legend(list(series)))
    return _svg("".join(parts))


def _pie(result: Result) -> str:
    slices = [(x, v) for x, _, v in result.points if v > 0]
    total = sum(v for _, v in slices) or 1.0
    cx, cy, r, angle, parts = 120, 110, 90, -math.pi / 2, []
    for number, (label, value) in enumerate(slices):
        sweep = 2 * math.pi * value / total
        color = COLORS[number % len(COLORS)]
        if len(slices) == 1:
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="{r}" fill="{color}"/>')
        else:
            x1, y1 = cx + r * math.cos(angle), cy + r * math.sin(angle)
            x2, y2 = cx + r * math.cos(angle + sweep), cy + r * math.sin(angle + sweep)
            large = 1 if sweep > math.pi else 0
            parts.append(f'<path d="M{cx},{cy} L{x1:.1f},{y1:.1f} A{r},{r} 0 {large} 1 '
                         f'{x2:.1f},{y2:.1f} Z" fill="{color}"/>')  # fmt: skip
        middle = angle + sweep / 2
        parts.append(_point(cx + r / 2 * math.cos(middle), cy + r / 2 * math.sin(middle),
                            "", label, value, color))  # fmt: skip
        parts.append(f'<text x="240" y="{20 + 16 * number}" font-size="11" fill="{color}">'
                     f"{html.escape(label[:60])}: {value:g}</text>")  # fmt: skip
        angle += sweep
    return _svg("".join(parts))


def _svg(body: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img">{body}</svg>')  # fmt: skip


def _metric(result: Result) -> str:
    value = result.points[0][2] if result.points else 0.0
    return (f'<p class="metric point" data-value="{value:g}">{value:g}</p>'
            f"<p>{html.escape(result.panel.metric.label)}</p>")  # fmt: skip


def _table(result: Result) -> str:
    columns = ["@timestamp", *result.panel.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        '<tr class="point">'
        + "".join(f"<td>{html.escape(str(row.get(c, '')))[:300]}</td>" for c in columns)
        + "</tr>"
        for row in result.rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_panel(result: Result) -> str:
    chart = result.panel.chart
    if result.empty:
        body = '<p class="empty">no data</p>'
    elif chart == "search":
        body = _table(result)
    elif chart == "metric":
        body = _metric(result)
    elif chart == "pie":
        body = _pie(result)
    else:
        body = _xy(result, bars=chart == "bar")
    title = html.escape(result.panel.title)
    return (f'<section class="panel" id="{result.panel.id}" style="grid-column: span '
            f'{result.panel.width}"><h2>{title}</h2>{body}</section>')  # fmt: skip


STYLE = (
    "body{font-family:sans-serif;margin:1em;background:#f5f7fa}"
    ".grid{display:grid;grid-template-columns:repeat(48,1fr);gap:12px}"
    ".panel{background:#fff;border:1px solid #d3dae6;padding:8px;overflow:auto}"
    "h2{font-size:15px;margin:0 0 6px}.metric{font-size:40px;margin:8px 0}"
    "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:2px 4px}"
    "svg{max-width:100%;height:auto}.empty{color:#a00}"
)


def render_page(dashboard: Dashboard, results: Sequence[Result], generated: str) -> str:
    panels = "".join(render_panel(result) for result in results)
    title = html.escape(dashboard.title)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}</style></head><body><h1>{title}</h1>"
        f"<p>{html.escape(dashboard.description)} {html.escape(generated)}</p>"
        f'<div class="grid">{panels}</div></body></html>'
    )


def preview(
    out: Path,
    elasticsearch: str,
    index_prefix: str = "hubkeeper-logs",
    since: str = "now-24h",
    dashboards: Sequence[Dashboard] = DASHBOARDS,
    session: requests.Session | None = None,
) -> dict[str, list[Result]]:
    """Write ``<dashboard id>.html`` per dashboard into ``out``; the results by dashboard."""
    out.mkdir(parents=True, exist_ok=True)
    generated = f"Data from {index_prefix}-* since {since}."
    answers: dict[str, list[Result]] = {}
    index = f"{index_prefix}-*"
    session = session or requests.Session()
    interval = time_interval(session, elasticsearch, index, since)
    for dashboard in dashboards:
        results = [run(p, elasticsearch, index, since, interval, session) for p in dashboard.panels]
        page = render_page(dashboard, results, generated)
        (out / f"{dashboard.id}.html").write_text(page, encoding="utf-8")
        answers[dashboard.id] = results
    return answers
