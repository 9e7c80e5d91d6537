"""PRTG sensors of the container exporter: an overview and one sensor per user server.

``/prtg/overview``                  running servers, orphans, missing, totals, top users
``/prtg/servers/<user>``            the user's default server
``/prtg/servers/<user>/<server>``   a named server
``/prtg/cluster``                   (``reconcile = "cluster"``) the swarm's nodes, servers on
                                    each, missing and orphans, top users across every node
Channel names are stable (top users are ``Memory top 1`` ... with the names in the text),
since PRTG creates a channel the first time it sees a name and keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from hubkeeper import prtg
from hubkeeper.prtg import Limits, Payload, channel
from hubkeeper.watchers.containers.model import Sample, Snapshot
from hubkeeper.watchers.containers.reconcile import Reconciliation, server_path
from hubkeeper.watchers.containers.swarm import samples_of

MAX_TOP = 20  # 10 fixed channels + 2 x 20 top channels = 50, PRTG's maximum


@dataclass(frozen=True)
class SensorSettings:
    top: int = 5
    memory_warning_percent: float = 80.0
    memory_error_percent: float = 95.0
    cpu_warning_percent: float = 90.0
    docker_url: str = ""
    hub: str = ""  # prefer this hub's container when a user has servers in several


def _mib(value: float) -> str:
    return f"{value / 2**20:.0f} MiB"


def _names(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def docker_down(snapshot: Snapshot, settings: SensorSettings) -> Payload:
    return prtg.error(
        f"Docker engine unreachable at {settings.docker_url}: {snapshot.docker_error}"
    )


def overview(
    snapshot: Snapshot, reconciliation: Reconciliation | None, settings: SensorSettings
) -> Payload:
    """The overview sensor; PRTG's error form while the Docker engine does not answer."""
    if not snapshot.docker_up:
        return docker_down(snapshot, settings)
    samples = snapshot.samples
    by_memory = sorted(samples, key=lambda s: s.stats.memory_working_set, reverse=True)
    by_cpu = sorted(samples, key=lambda s: s.cpu_rate or 0.0, reverse=True)
    channels = [
        channel("Running servers", len(samples)),
        channel("CPU total", 100.0 * sum(s.cpu_rate or 0.0 for s in samples), "CPU"),
        channel(
            "Memory total",
            sum(s.stats.memory_working_set for s in samples),
            "BytesMemory",
            volume_size="MegaByte",
        ),
    ]
    texts = [f"{len(samples)} user servers"]
    if reconciliation is not None:
        hub_up = reconciliation.hub_up
        channels.append(channel("Hub API up", int(hub_up), limits=Limits(min_warning=1)))
        if hub_up:
            channels += [
                channel("Hub servers", reconciliation.hub_servers),
                channel("Orphan containers", len(reconciliation.orphans), limits=_any_warns()),
                channel("Missing servers", len(reconciliation.missing), limits=_any_warns()),
            ]
            orphans = [orphan.describe() for orphan in reconciliation.orphans]
            missing = [server.describe() for server in reconciliation.missing]
            texts.append(f"orphans: {_names(orphans) or 'none'}")
            texts.append(f"missing: {_names(missing) or 'none'}")
        else:
            texts.append(f"hub API unreachable: {reconciliation.error}")
    for rank in range(settings.top):
        memory = by_memory[rank].stats.memory_working_set if rank < len(by_memory) else 0
        cpu = (by_cpu[rank].cpu_rate or 0.0) if rank < len(by_cpu) else 0.0
        channels.append(
            channel(f"Memory top {rank + 1}", memory, "BytesMemory", volume_size="MegaByte")
        )
        channels.append(channel(f"CPU top {rank + 1}", 100.0 * cpu, "CPU"))
    top_memory = [
        f"{_label(s)} {_mib(s.stats.memory_working_set)}" for s in by_memory[: settings.top]
    ]
    top_cpu = [f"{_label(s)} {100 * (s.cpu_rate or 0):.0f}%" for s in by_cpu[: settings.top]]
    if samples:
        texts.append(f"top memory: {', '.join(top_memory)}")
        texts.append(f"top CPU: {', '.join(top_cpu)}")
    channels += [
        channel("Docker engine up", 1, limits=Limits(min_error=1)),
        channel("Scrape time", snapshot.duration * 1000.0, "TimeResponse"),
    ]
    return prtg.sensor(channels, "; ".join(texts))


def _any_warns() -> Limits:
    return Limits(max_warning=0, warning_msg="see the sensor text for names")


def _label(sample: Sample) -> str:
    return server_path(sample.user, sample.server)


def find(snapshot: Snapshot, user: str, server: str, hub: str) -> Sample | None:
    matches = [s for s in snapshot.samples if s.user == user and s.server == server]
    matches.sort(key=lambda s: s.info.hub != hub)  # this deployment's hub first
    return matches[0] if matches else None


def server_sensor(snapshot: Snapshot, user: str, server: str, settings: SensorSettings) -> Payload:
    """One user server's sensor; the error form when it has no running container."""
    if not snapshot.docker_up:
        return docker_down(snapshot, settings)
    sample = find(snapshot, user, server, settings.hub)
    if sample is None:
        return prtg.error(f"no running container for server {server_path(user, server)!r}")
    stats, info = sample.stats, sample.info
    limit = sample.memory_limit
    channels = [channel("CPU", 100.0 * (sample.cpu_rate or 0.0), "CPU")]
    if sample.cpu_limit:
        channels.append(
            channel(
                "CPU of limit",
                100.0 * (sample.cpu_rate or 0.0) / sample.cpu_limit,
                "Percent",
                limits=Limits(max_warning=settings.cpu_warning_percent),
            )
        )
    if sample.throttled_ratio is not None:
        channels.append(channel("CPU throttled", 100.0 * sample.throttled_ratio, "Percent"))
    channels.append(
        channel("Memory", stats.memory_working_set, "BytesMemory", volume_size="MegaByte")
    )
    if limit:
        channels += [
            channel("Memory limit", limit, "BytesMemory", volume_size="MegaByte"),
            channel(
                "Memory of limit",
                100.0 * stats.memory_working_set / limit,
                "Percent",
                limits=Limits(
                    max_warning=settings.memory_warning_percent,
                    max_error=settings.memory_error_percent,
                ),
            ),
        ]
    for name, value in (("RSS", stats.memory_rss), ("Cache", stats.memory_cache)):
        if value is not None:
            channels.append(channel(name, value, "BytesMemory", volume_size="MegaByte"))
    if stats.oom_kills is not None:
        channels.append(
            channel("OOM kills", stats.oom_kills, mode="Difference", limits=Limits(max_warning=0))
        )
    for name, value in (("Processes", stats.processes), ("Threads", stats.threads)):
        if value is not None:
            channels.append(channel(name, value))
    if stats.io:
        for name, total in (
            ("Disk read", sum(d.read_bytes for d in stats.io)),
            ("Disk write", sum(d.write_bytes for d in stats.io)),
        ):
            channels.append(channel(name, total, "SpeedDisk", mode="Difference"))
    if info.started_at:
        channels.append(channel("Uptime", int(sample.time - info.started_at), "TimeSeconds"))
    memory = _mib(stats.memory_working_set) + (f" of {_mib(limit)}" if limit else "")
    text = (
        f"{server_path(sample.user, sample.server)}: container {info.name} ({info.image}), "
        f"CPU {100 * (sample.cpu_rate or 0):.0f}%, memory {memory}"
    )
    return prtg.sensor(channels, text)


def parse_server_path(path: str) -> tuple[str, str] | None:
    """``/prtg/servers/<user>[/<server>]`` (percent-encoded) as (user, server)."""
    parts = path.removeprefix("/prtg/servers/").split("/")
    if not parts[0] or len(parts) > 2:
        return None
    user = unquote(parts[0])
    return user, unquote(parts[1]) if len(parts) == 2 else ""


# --- the whole swarm ------------------------------------------------------------------------

ServerMemory = tuple[str, str, float]  # user[/server], node, working set bytes
MEMORY = "container_memory_working_set_bytes"


def server_memory(metrics: str, hub: str, node: str) -> list[ServerMemory]:
    """This hub's servers' memory from a node exporter's ``/metrics``."""
    found = []
    for sample in samples_of(metrics, MEMORY):
        labels = sample.labels
        if labels.get("hub") == hub:
            user, server = labels.get("jupyterhub_user", ""), labels.get("jupyterhub_server", "")
            found.append((server_path(user, server), node, sample.value))
    return found


def cluster_overview(
    last: Reconciliation | None,
    memory: list[ServerMemory],
    unanswered: list[str],
    settings: SensorSettings,
) -> Payload:
    """The cluster sensor of the exporter that keeps a swarm's books: its nodes (error while
    one is down), the hub's servers on each, missing servers and orphan services, and the
    top users by memory across every node whose exporter answered."""
    if last is None or not last.hub_up:
        reason = last.error if last is not None else "no reconciliation yet"
        return prtg.error(f"the cluster's books are unknown: {reason}")
    down = [node.name for node in last.nodes if not node.up]
    channels = [
        channel("Nodes", len(last.nodes)),
        channel("Nodes down", len(down), limits=Limits(max_error=0, error_msg="a node is down")),
        channel("Servers", last.hub_servers),
        channel("Missing servers", len(last.missing), limits=_any_warns()),
        channel("Orphan services", len(last.orphans), limits=_any_warns()),
        channel("Memory total", sum(m[2] for m in memory), "BytesMemory", volume_size="MegaByte"),
    ]
    top = sorted(memory, key=lambda m: m[2], reverse=True)[: settings.top]
    for rank in range(settings.top):
        value = top[rank][2] if rank < len(top) else 0.0
        channels.append(
            channel(f"Memory top {rank + 1}", value, "BytesMemory", volume_size="MegaByte")
        )
    room = prtg.MAX_CHANNELS - len(channels)
    channels += [
        channel(f"Servers on {node.name}", last.servers_on.get(node.name, 0))
        for node in last.nodes[:room]
    ]
    texts = [f"{len(last.nodes) - len(down)} of {len(last.nodes)} nodes up"]
    if down:
        texts.append(f"down: {_names(down)}")
    texts.append(f"missing: {_names([m.describe() for m in last.missing]) or 'none'}")
    texts.append(f"orphans: {_names([o.describe() for o in last.orphans]) or 'none'}")
    if top:
        texts.append(
            "top memory: " + ", ".join(f"{path} on {node} {_mib(b)}" for path, node, b in top)
        )
    if unanswered:
        texts.append(f"no figures from the exporters of {_names(unanswered)}")
    return prtg.sensor(channels, "; ".join(texts))
