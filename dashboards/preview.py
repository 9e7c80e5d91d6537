"""The preview without Kibana: every panel's query against Elasticsearch, one static HTML
page per dashboard with inline SVG charts (no scripts, no external assets)."""

from __future__ import annotations

import html
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from hubkeeper.dashboards.panels import DASHBOARDS, Dashboard, Metric, Panel, Split, Unit, dsl, unit

SEARCH_ROWS = 20


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

WIDTH, PLOT_H, PAD, ROW, LINE = 640, 170, 10, 18, 16
CHAR = 6.6  # pixels per character of 11 px text (for the layout only)
WRAP = 40  # characters per line of a bar's label
#: Series colours without the conventional green, blue, amber and red, which mean a status.
PALETTE = ("#6F5BB5", "#17A2B8", "#8C564B", "#D45D9A", "#7F7F7F", "#A6A03A", "#1B4F72")
BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def _scale(value: float, kind: Unit) -> tuple[float, str]:
    """The divisor and the suffix a value of about ``value`` is shown with."""
    if kind == "ns":
        return 1e6, " ms"
    if kind == "bytes":
        power = 0
        while power < len(BYTE_UNITS) - 1 and abs(value) >= 1024 ** (power + 1):
            power += 1
        return 1024.0**power, f" {BYTE_UNITS[power]}"
    return 1.0, ""


def format_value(value: float, kind: Unit = "", like: float | None = None) -> str:
    """A number as people read it: nanoseconds in milliseconds, bytes in B to TiB (scaled
    as ``like``, e.g. an axis' top, else as ``value``), thousands separated, at most two
    decimals, never in exponent notation."""
    divisor, suffix = _scale(value if like is None else like, kind)
    shown = value / divisor
    text = f"{shown:,.{0 if abs(shown) >= 100 else 1 if abs(shown) >= 10 else 2}f}"
    return (text.rstrip("0").rstrip(".") if "." in text else text) + suffix


def _ticks(top: float, kind: Unit, whole: bool) -> list[float]:
    """0 and round steps (1, 2 or 5 times a power of ten, in the unit shown) up to ``top``
    or just above it; steps of at least 1 for whole numbers."""
    divisor, _ = _scale(top, kind)
    raw = top / divisor / 4
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(power * m for m in (1, 2, 5, 10) if power * m >= raw)
    step = max(step, 1.0) if whole and kind == "" else step
    return [i * step * divisor for i in range(max(1, math.ceil(top / divisor / step - 1e-9)) + 1)]


def _series(points: Sequence[tuple[str, str, float]]) -> tuple[list[str], dict[str, dict]]:
    xs: list[str] = []
    series: dict[str, dict[str, float]] = {}
    for x, name, value in points:
        if x not in xs:
            xs.append(x)
        series.setdefault(name, {})[x] = value
    return xs, series


def _color(split: Split | None, name: str, number: int) -> str:
    """The split's own colour for a bucket (status classes, outcomes), else the palette's."""
    fixed = dict(split.colors) if split is not None else {}
    return fixed.get(name, PALETTE[number % len(PALETTE)])


def _mark(shape: str, name: str, label: str, value: float, kind: Unit, color: str) -> str:
    """A data point (a circle or a bar) with its value as a tooltip."""
    title = html.escape(" ".join(filter(None, (name, label))) + f": {format_value(value, kind)}")
    return (f'<{shape} class="point" data-value="{value:.15g}" fill="{color}">'
            f"<title>{title}</title></{shape.split()[0]}>")  # fmt: skip


def _text(x: float, y: float, text: str, anchor: str = "start", size: int = 11) -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}">'
            f"{html.escape(text)}</text>")  # fmt: skip


def _legend(entries: Sequence[tuple[str, str]], top: float, width: float) -> tuple[str, float]:
    """Swatches with whole names, wrapped into rows: the markup and its height."""
    parts, x, row = [], float(PAD), 0
    for name, color in entries:
        room = 14 + len(name) * CHAR + 16
        if x + room > width and x > PAD:
            x, row = float(PAD), row + 1
        y = top + row * LINE
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="10" height="10" fill="{color}"/>')
        parts.append(_text(x + 14, y + 9, name))
        x += room
    return "".join(parts), (row + 1) * LINE if entries else 0


def _x_label(panel: Panel, x: str) -> str:
    """A bucket's label: times as UTC clock times, histogram buckets in their unit."""
    if panel.x is not None and panel.x.kind == "time":
        return x[11:19]
    if panel.x is not None and panel.x.kind == "histogram":
        return format_value(float(x), unit(panel.x.field))
    return x


def _xy(result: Result) -> str:
    """A line or bar chart: categories of a terms split as rows (bars lying flat, whole
    labels beside them), others as columns; bars split into series stacked."""
    panel = result.panel
    xs, series = _series(result.points)
    colors = {name: _color(panel.series, name, i) for i, name in enumerate(series)}
    kind = unit(panel.metric.field)
    stacked, flat = panel.stacked, panel.horizontal
    sums = [[v for s in series.values() for k, v in s.items() if k == x] for x in xs]
    top = max((sum(vs) if stacked else max(vs) for vs in sums), default=0.0) or 1.0
    whole = all(float(v).is_integer() for _, _, v in result.points)
    ticks = _ticks(top, kind, whole)
    top = ticks[-1]
    tick_labels = [format_value(t, kind, like=top) for t in ticks]
    labels = [_x_label(panel, x) for x in xs]
    width = max(WIDTH, 27 * panel.width)  # a full-width panel (48 columns) twice as wide
    wrapped = [textwrap.wrap(label, WRAP) or [""] for label in labels]  # whole, in lines
    heights = [max(ROW, LINE * len(rows) + 2) for rows in wrapped]
    middles = [10 + sum(heights[:i]) + h / 2 for i, h in enumerate(heights)]
    if flat:
        left = PAD + max(len(line) for rows in wrapped for line in rows) * CHAR
        width = max(width, left + 300)
        plot, slot, base = width - left - 5 * PAD, float(ROW), 10 + sum(heights)  # last tick
    else:
        left = PAD + max(len(label) for label in tick_labels) * CHAR
        plot, base = width - left - 2 * PAD, 10 + PLOT_H
        slot = plot / max(len(xs), 1)

    def along(value: float) -> float:  # the value axis: rightwards when flat, else upwards
        return left + plot * value / top if flat else base - PLOT_H * value / top

    parts = []
    for tick, text in zip(ticks, tick_labels, strict=True):
        at = along(tick)
        if flat:
            parts.append(
                f'<line x1="{at:.1f}" y1="10" x2="{at:.1f}" y2="{base}" stroke="#e3e8f0"/>'
            )
            parts.append(_text(at, base + 13, text, "middle"))
        else:
            parts.append(f'<line x1="{left}" y1="{at:.1f}" x2="{left + plot}" y2="{at:.1f}" '
                         f'stroke="#e3e8f0"/>')  # fmt: skip
            parts.append(_text(left - 4, at + 4, text, "end"))
    offsets = dict.fromkeys(xs, 0.0)
    lines: dict[str, list[str]] = {}
    for number, (name, values) in enumerate(series.items()):
        for index, x in enumerate(xs):
            if x not in values:
                continue
            value, start = values[x], offsets[x]
            middle = middles[index] if flat else left + slot * (index + 0.5)
            if panel.chart == "line":
                cx, cy = (along(value), middle) if flat else (middle, along(value))
                lines.setdefault(name, []).append(f"{cx:.1f},{cy:.1f}")
                shape = f'circle cx="{cx:.1f}" cy="{cy:.1f}" r="3"'
            else:
                size = slot * 0.8 / (1 if stacked else len(series))
                edge = middle - slot * 0.4 + (0 if stacked else size * number)
                low, high = sorted((along(start), along(start + value)))
                box = (low, edge, high - low, size) if flat else (edge, low, size, high - low)
                shape = 'rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}"'.format(*box)
                offsets[x] += value if stacked else 0
            parts.append(_mark(shape, name, labels[index], value, kind, colors[name]))
    for name, coords in lines.items():
        parts.insert(0, f'<polyline fill="none" stroke="{colors[name]}" stroke-width="2" '
                        f'points="{" ".join(coords)}"/>')  # fmt: skip
    if flat:  # whole labels beside the rows, wrapped
        parts += [_text(left - 6, y + 4 + LINE * (k - (len(rows) - 1) / 2), line, "end")
                  for y, rows in zip(middles, wrapped, strict=True)
                  for k, line in enumerate(rows)]  # fmt: skip
    else:  # as many column labels as fit side by side
        every = max(1, math.ceil((max(len(t) for t in labels) + 2) * CHAR / slot))
        parts += [_text(left + slot * (i + 0.5), base + 13, t, "middle")
                  for i, t in enumerate(labels) if i % every == 0]  # fmt: skip
    axis = (left, 10, left, base) if flat else (left, base, left + plot, base)
    parts.append('<line x1="{:.1f}" y1="{}" x2="{:.1f}" y2="{}" stroke="#888"/>'.format(*axis))
    legend, height = _legend(list(colors.items()), base + 22, width)
    return _svg("".join([*parts, legend]), width, base + 24 + height)


def _pie(result: Result) -> str:
    slices = [(x, v) for x, _, v in result.points if v > 0]
    total = sum(v for _, v in slices) or 1.0
    kind = unit(result.panel.metric.field)
    cx, cy, r, angle, parts = 120, 110, 90, -math.pi / 2, []
    for number, (label, value) in enumerate(slices):
        sweep = 2 * math.pi * value / total
        color = _color(result.panel.x, label, number)
        if len(slices) == 1:
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="{r}" fill="{color}"/>')
        else:
            x1, y1 = cx + r * math.cos(angle), cy + r * math.sin(angle)
            x2, y2 = cx + r * math.cos(angle + sweep), cy + r * math.sin(angle + sweep)
            large = 1 if sweep > math.pi else 0
            parts.append(f'<path d="M{cx},{cy} L{x1:.1f},{y1:.1f} A{r},{r} 0 {large} 1 '
                         f'{x2:.1f},{y2:.1f} Z" fill="{color}"/>')  # fmt: skip
        middle = angle + sweep / 2
        px, py = cx + r / 2 * math.cos(middle), cy + r / 2 * math.sin(middle)
        parts.append(_mark(f'circle cx="{px:.1f}" cy="{py:.1f}" r="3"', "", label, value, kind,
                           color))  # fmt: skip
        parts.append(f'<rect x="240" y="{11 + LINE * number}" width="10" height="10" '
                     f'fill="{color}"/>')  # fmt: skip
        parts.append(_text(254, 20 + LINE * number, f"{label}: {format_value(value, kind)}"))
        angle += sweep
    width = max(WIDTH, 254 + max((len(x) + 12 for x, _ in slices), default=0) * CHAR)
    return _svg("".join(parts), width, max(230, 20 + LINE * len(slices)))


def _svg(body: str, width: float, height: float) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" role="img">{body}</svg>')  # fmt: skip


def _metric(result: Result) -> str:
    value = result.points[0][2] if result.points else 0.0
    shown = format_value(value, unit(result.panel.metric.field))
    return (f'<p class="metric point" data-value="{value:.15g}">{html.escape(shown)}</p>'
            f"<p>{html.escape(result.panel.metric.label)}</p>")  # fmt: skip


def _cell(column: str, text: str) -> str:
    """A table cell: a number in its column's unit, other text up to 300 characters."""
    kind = unit(column)
    if kind and text.replace(".", "", 1).isdigit():
        return format_value(float(text), kind)
    return text[:300]


def _table(result: Result) -> str:
    columns = ["@timestamp", *result.panel.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        '<tr class="point">'
        + "".join(f"<td>{html.escape(_cell(c, str(row.get(c, ''))))}</td>" for c in columns)
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
        body = _xy(result)
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
