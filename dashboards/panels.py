"""The one source of truth: every dashboard panel, defined once.

A panel says what to count (``where``, ``metric``), how to split it (``x``, ``series``),
how to draw it (``chart``) and how wide it is (``width`` of Kibana's 48 columns). Both the
Kibana saved objects (:mod:`dashboards.kibana`, KQL) and the static preview
(:mod:`dashboards.preview`, Elasticsearch query DSL) are produced from these definitions,
so the two cannot disagree. Only fields the log shipper really indexes are used
(``shippers/mapping.py``), never a subfield of the flattened ``hubkeeper.json``, which
Kibana's data views do not list and so cannot aggregate on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Scalar = str | bool | int | float
Chart = Literal["line", "bar", "pie", "metric", "search"]
Unit = Literal["", "ns", "bytes"]

#: Fields in nanoseconds (ECS ``event.duration``): shown in milliseconds. Fields whose name
#: ends in ``.bytes`` (the ECS convention) are shown as bytes.
NANOSECOND_FIELDS = frozenset({"event.duration"})


def unit(field_name: str | None) -> Unit:
    """The unit of a field's values: what Kibana's field format and the preview show."""
    if field_name in NANOSECOND_FIELDS:
        return "ns"
    return "bytes" if field_name is not None and field_name.endswith(".bytes") else ""


@dataclass(frozen=True)
class Where:
    """One condition: ``field`` is one of ``values``, or within ``[gte, lt)``, or its text
    contains ``phrase``; with ``values``, ``gte``, ``lt`` and ``phrase`` all unset: the
    field exists."""

    field: str
    values: tuple[Scalar, ...] = ()
    gte: float | None = None
    lt: float | None = None
    phrase: str | None = None

    def kql(self) -> str:
        if self.phrase is not None:
            return f"{self.field}:{_quote(self.phrase)}"
        if self.values:
            inner = " or ".join(_quote(v) for v in self.values)
            return f"{self.field}:({inner})" if len(self.values) > 1 else f"{self.field}:{inner}"
        parts = [f"{self.field} >= {_num(self.gte)}"] if self.gte is not None else []
        parts += [f"{self.field} < {_num(self.lt)}"] if self.lt is not None else []
        return " and ".join(parts) or f"{self.field}:*"

    def dsl(self) -> dict[str, Any]:
        if self.phrase is not None:
            return {"match_phrase": {self.field: self.phrase}}
        if self.values:
            return {"terms": {self.field: list(self.values)}}
        bounds = {k: v for k, v in (("gte", self.gte), ("lt", self.lt)) if v is not None}
        return {"range": {self.field: bounds}} if bounds else {"exists": {"field": self.field}}


@dataclass(frozen=True)
class AnyOf:
    """At least one of its conditions holds."""

    conditions: tuple[Where, ...]

    def kql(self) -> str:
        return "(" + " or ".join(f"({c.kql()})" for c in self.conditions) + ")"

    def dsl(self) -> dict[str, Any]:
        return {"bool": {"should": [c.dsl() for c in self.conditions], "minimum_should_match": 1}}


Condition = Where | AnyOf


def kql(conditions: tuple[Condition, ...]) -> str:
    """All conditions as one KQL query (empty: everything)."""
    return " and ".join(c.kql() for c in conditions)


def dsl(conditions: tuple[Condition, ...]) -> list[dict[str, Any]]:
    """All conditions as a ``bool.filter`` list."""
    return [c.dsl() for c in conditions]


def _quote(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _num(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _num(value: float | None) -> str:
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)


@dataclass(frozen=True)
class Metric:
    """What each bucket shows: a document count, a distinct count, an average, a maximum,
    a sum, or percentiles of a numeric field."""

    kind: Literal["count", "unique", "avg", "max", "sum", "percentiles"] = "count"
    field: str | None = None
    percents: tuple[float, ...] = (50.0, 95.0, 99.0)
    label: str = "Count"


@dataclass(frozen=True)
class Split:
    """Buckets: over time, by the top values of a field, by numeric ranges or a fixed
    histogram interval, or by named filters; ``colors``: a fixed colour per bucket label."""

    kind: Literal["time", "terms", "range", "histogram", "filters"]
    field: str = "@timestamp"
    size: int = 10
    ranges: tuple[tuple[float, float, str], ...] = ()
    interval: float = 0.0
    filters: tuple[tuple[str, Condition], ...] = ()
    colors: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Panel:
    """One chart (or, for ``search``, a list of the newest matching log lines)."""

    id: str
    title: str
    chart: Chart
    where: tuple[Condition, ...] = ()
    metric: Metric = Metric()
    x: Split | None = None
    series: Split | None = None
    columns: tuple[str, ...] = ()
    width: int = 24
    height: int = 14

    @property
    def horizontal(self) -> bool:
        """Bars by the top values of a field lie flat, so that their labels are never cut."""
        return self.chart == "bar" and self.x is not None and self.x.kind == "terms"

    @property
    def stacked(self) -> bool:
        """Bars split into series are stacked (percentiles are not parts of a whole)."""
        return self.chart == "bar" and self.series is not None and self.metric.kind != "percentiles"

    def fields(self) -> tuple[set[str], set[str]]:
        """The fields it aggregates or filters on, and those it searches as text."""
        aggregated = {self.metric.field} if self.metric.field else set()
        conditions = list(self.where)
        for split in (self.x, self.series):
            if split is not None:
                aggregated.add(split.field)
                conditions += [c for _, c in split.filters]
        flat = [w for c in conditions for w in (c.conditions if isinstance(c, AnyOf) else (c,))]
        aggregated |= {w.field for w in flat if w.phrase is None}
        return aggregated, {w.field for w in flat if w.phrase is not None}


@dataclass(frozen=True)
class Dashboard:
    id: str
    title: str
    description: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)

    def layout(self) -> list[tuple[Panel, dict[str, int]]]:
        """Each panel with its grid position: left to right, then the next row."""
        placed, x, y, row = [], 0, 0, 0
        for panel in self.panels:
            if x + panel.width > 48:
                x, y, row = 0, y + row, 0
            placed.append((panel, {"x": x, "y": y, "w": panel.width, "h": panel.height}))
            x, row = x + panel.width, max(row, panel.height)
        return placed


# --- building blocks ---------------------------------------------------------------------

HUB = Where("event.dataset", ("jupyterhub",))
ACCESS = Where("event.dataset", ("nginx.access",))
CONTAINER = Where("event.dataset", ("container",))
HUB_REQUEST = Where("http.response.status_code")
ERRORS = Where("log.level", ("error", "critical"))
# what the daemons index themselves (shippers/documents.py) and log (JSON lines)
SNAPSHOTS = Where("event.dataset", ("hubkeeper.containers",))
HUB_STATE = Where("event.dataset", ("hubkeeper.hub",))
SHIPPER_STATUS = Where("event.dataset", ("hubkeeper.shipper",))
STORAGE = Where("event.dataset", ("hubkeeper.storage",))
WATCHER = Where("log.logger", ("hubkeeper.watchers.hubs.watcher",))
TIME = Split("time")
SECOND_NS = 1_000_000_000
# conventional colours: success green, redirect blue, client error amber, server error red
GREY, GREEN, BLUE, AMBER, RED = "#98A2B3", "#2E9E5B", "#3F7FD0", "#F5A700", "#D1231B"
STATUS_CLASSES = Split(
    "range",
    "http.response.status_code",
    ranges=tuple((c * 100, c * 100 + 100, f"{c}xx") for c in range(1, 6)),
    colors=(("1xx", GREY), ("2xx", GREEN), ("3xx", BLUE), ("4xx", AMBER), ("5xx", RED)),
)


def action(*names: str) -> Where:
    return Where("event.action", names)


CULLS = (action("cull_decision"),
         Where("hubkeeper.event.result", ("done", "stopping", "unconfirmed")))  # fmt: skip


CONTAINER_ACTIONS = ("container-created", "container-starting", "container-stopping",
                     "container-removing", "container-gone", "container-not-found")  # fmt: skip


def top(field_name: str, size: int = 10) -> Split:
    return Split("terms", field_name, size=size)


HUB_OVERVIEW = Dashboard(
    "hubkeeper-hub-overview",
    "Hub overview",
    "Is the hub healthy and fast: requests through NGINX, hub latency, errors, logins, users.",
    (
        Panel("requests-by-status", "Requests by status class (NGINX)", "line",
              (ACCESS,), x=TIME, series=STATUS_CLASSES, width=48),
        Panel("hub-latency", "Hub request latency percentiles", "line",
              (HUB, HUB_REQUEST), Metric("percentiles", "event.duration", label="latency"),
              x=TIME),
        Panel("logins", "Logins succeeded and failed", "bar", (HUB,), x=TIME,
              series=Split("filters", filters=(
                  ("succeeded", action("login")),
                  ("failed", action("login-failed")),
              ), colors=(("succeeded", GREEN), ("failed", RED)))),
        Panel("active-users", "Active users", "metric", (HUB,),
              Metric("unique", "user.name", label="users"), width=12, height=8),
        Panel("requests-total", "Requests (NGINX)", "metric", (ACCESS,), width=12, height=8),
        Panel("top-endpoints", "Top endpoints (NGINX)", "bar", (ACCESS,), x=top("url.path")),
        Panel("refused-requests", "Refused hub requests by reason", "bar",
              (HUB, Where("event.reason")), x=top("event.reason"),
              series=top("http.response.status_code", 5)),
        Panel("errors-and-slow", "5xx and slow (>= 1 s) hub requests", "search",
              (HUB, HUB_REQUEST, AnyOf((Where("http.response.status_code", gte=500),
                           Where("event.duration", gte=SECOND_NS)))),
              columns=("http.response.status_code", "http.request.method", "url.path",
                       "user.name", "event.duration"), width=48),
    ),
)  # fmt: skip

SPAWNS = Dashboard(
    "hubkeeper-spawns",
    "Spawns",
    "Are spawns succeeding and how long they take; what failed or got stuck; which servers "
    "stopped, and with which exit code.",
    (
        Panel("spawns-over-time", "Spawns succeeded, failed and servers stopped", "bar",
              (HUB,), x=TIME, series=Split("filters", filters=(
                  ("succeeded", action("spawn")),
                  ("failed", action("spawn-failed")),
                  ("stopped", action("stop")),
              ), colors=(("succeeded", GREEN), ("failed", RED), ("stopped", GREY))), width=48),
        Panel("spawn-duration", "Spawn duration distribution (1 s buckets)", "bar",
              (HUB, action("spawn")), x=Split("histogram", "event.duration",
                                              interval=SECOND_NS)),
        Panel("spawn-duration-by-user", "Slowest spawn per user", "bar",
              (HUB, action("spawn")), Metric("max", "event.duration", label="slowest"),
              x=top("user.name")),
        Panel("stuck-spawns", "Stuck spawns and stops (culler)", "bar",
              (action("cull_decision"), Where("event.reason", ("stuck_spawn", "stuck_stop"))),
              x=top("user.name"), series=top("hubkeeper.event.action")),
        Panel("failure-reasons", "Most frequent spawn failure messages", "bar",
              (HUB, action("spawn-failed")), x=top("labels.spawn_failure")),
        Panel("servers-stopped", "Servers stopped by user", "bar", (HUB, action("stop")),
              x=top("user.name")),
        Panel("exit-codes", "Servers found stopped, by exit code", "bar",
              (HUB, action("server-exited")), x=top("process.exit_code"),
              series=top("user.name")),
        Panel("spawn-failures", "Spawn failures", "search", (HUB, action("spawn-failed")),
              columns=("user.name", "message", "error.type"), width=48),
    ),
)  # fmt: skip

USERS = Dashboard(
    "hubkeeper-users",
    "Users and containers",
    "Who uses what: requests and log lines per user, CPU and memory of user servers against "
    "their limits, OOM kills, orphaned containers.",
    (
        Panel("requests-per-user", "Hub requests per user", "bar", (HUB, HUB_REQUEST),
              x=top("user.name", 20)),
        Panel("user-activity", "User activity over time", "line", (HUB, HUB_REQUEST),
              x=TIME, series=top("user.name", 5)),
        Panel("cpu-of-limit", "CPU of user servers (% of their limit)", "line", (SNAPSHOTS,),
              Metric("max", "hubkeeper.container.cpu.pct_of_limit", label="CPU %"),
              x=TIME, series=top("user.name")),
        Panel("memory-of-limit", "Memory of user servers (% of their limit)", "line",
              (SNAPSHOTS,),
              Metric("max", "hubkeeper.container.memory.pct_of_limit", label="memory %"),
              x=TIME, series=top("user.name")),
        Panel("memory-by-user", "Largest memory working set per user", "bar",
              (SNAPSHOTS,),
              Metric("max", "hubkeeper.container.memory.working_set.bytes",
                     label="working set"),
              x=top("user.name", 20)),
        Panel("oom-kills", "OOM kills per user server", "bar",
              (SNAPSHOTS, Where("hubkeeper.container.memory.oom_kills", gte=1)),
              Metric("max", "hubkeeper.container.memory.oom_kills", label="OOM kills"),
              x=top("container.name", 20)),
        Panel("servers-per-node", "User servers per node (Swarm: each node's exporter)", "line",
              (SNAPSHOTS,), Metric("unique", "container.id", label="servers"), x=TIME,
              series=top("host.name", 20)),
        Panel("orphans-over-time", "Orphaned containers (running, unknown to the hub)", "line",
              (HUB_STATE,), Metric("max", "hubkeeper.hub.orphans", label="orphans"), x=TIME),
        Panel("orphan-containers", "Orphaned containers", "search",
              (SNAPSHOTS, Where("hubkeeper.container.orphan", (True,))),
              columns=("container.name", "user.name", "labels.jupyterhub_server",
                       "container.image.name", "hubkeeper.container.memory.working_set.bytes")),
        Panel("container-lines-per-user", "User server log lines per user", "bar",
              (CONTAINER,), x=top("labels.jupyterhub_user", 20),
              series=top("hubkeeper.stream", 2)),
        Panel("images", "User server log lines by image", "pie", (CONTAINER,),
              x=top("container.image.name")),
        Panel("container-lifecycle", "User server containers created, started, stopped, "
              "removed (DockerSpawner)", "bar", (HUB, action(*CONTAINER_ACTIONS)), x=TIME,
              series=top("event.action", len(CONTAINER_ACTIONS)), width=48),
    ),
)  # fmt: skip

RELIABILITY = Dashboard(
    "hubkeeper-reliability",
    "Reliability",
    "What the reliability machinery did (failovers, NGINX reloads, culls), whether the logs "
    "keep up (shipper lag, dead letters), and what went wrong in every component.",
    (
        Panel("watcher-timeline", "Failovers and watcher decisions", "bar", (WATCHER,),
              x=TIME, series=top("event.action", 12), width=48),
        Panel("watcher-events", "Watcher decisions and actions", "search", (WATCHER,),
              columns=("event.action", "hubkeeper.event.kind", "event.reason",
                       "hubkeeper.event.source", "hubkeeper.event.target", "labels.hub",
                       "hubkeeper.event.state"), width=48),
        Panel("adopted-servers", "Servers a hub adopted at its start (after a failover)",
              "search", (HUB, action("server-adopted", "route-added")),
              columns=("user.name", "labels.jupyterhub_server", "event.action",
                       "log.file.path"), width=48),
        Panel("nginx-reloads", "NGINX reloads by the hub made active", "bar",
              (WATCHER, action("nginx_switched")), x=TIME,
              series=top("hubkeeper.event.active")),
        Panel("culls-by-reason", "Culls by reason", "pie", CULLS, x=top("event.reason")),
        Panel("shipper-lag", "Shipper lag (seconds behind, worst file)", "line",
              (SHIPPER_STATUS,), Metric("max", "hubkeeper.shipper.lag.seconds", label="seconds"),
              x=TIME, series=top("host.name")),
        Panel("dead-letters", "Dead letters (events the index refused)", "bar",
              (SHIPPER_STATUS,),
              Metric("sum", "hubkeeper.shipper.events.dead_lettered", label="dead letters"),
              x=TIME),
        Panel("storage-free", "Notebook storage: free space per mount (%)", "line",
              (STORAGE,), Metric("avg", "hubkeeper.storage.free_pct", label="free %"),
              x=TIME, series=top("labels.mount")),
        Panel("storage-state", "Notebook storage: probe outcome per mount (ok, slow, failed, "
              "hung)", "bar", (STORAGE,), x=TIME, series=top("hubkeeper.storage.state", 4)),
        Panel("errors-over-time", "Errors and warnings by component", "line",
              (Where("log.level", ("warning", "error", "critical")),), x=TIME,
              series=top("service.name"), width=48),
        Panel("levels-by-dataset", "Log lines by dataset and level", "bar", (),
              x=top("event.dataset"), series=top("log.level", 6)),
        Panel("error-types", "Exception types", "pie", (ERRORS, Where("error.type")),
              x=top("error.type")),
        Panel("error-lines", "Error log lines from all components", "search", (ERRORS,),
              columns=("service.name", "log.logger", "message", "error.type"), width=48),
    ),
)  # fmt: skip

DASHBOARDS: tuple[Dashboard, ...] = (HUB_OVERVIEW, SPAWNS, USERS, RELIABILITY)
