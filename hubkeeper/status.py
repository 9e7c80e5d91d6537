"""``hubkeeper status``: one screen of the whole service, from each daemon's own endpoint.

Hubs from the watcher's ``/status`` (or its saved state when it does not answer), user
servers from the container exporter, log shipping from the shipper, the last cull cycle
from the culler (their ``/metrics``), notebook storage from each node's storage watcher
(``/status``: this node's and those in ``[culler] storage_watchers``), what fires from
Alertmanager, and, under the local stack (``hubkeeper up``), each daemon's restarts from the
stack's supervisor (``supervised.json`` beside the config it generated; in production
systemd keeps that count: ``systemctl show -p NRestarts``).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import http.client
import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from hubkeeper.config import Config, EndpointConfig
from hubkeeper.endpoint import client_context, endpoint_url

Section = dict[str, Any]
DEAD_LETTERS = 'hubkeeper_shipper_events_total{outcome="dead_lettered"}'
SUPERVISED_FILE = "supervised.json"  # written by hubkeeper.deploy.supervise


def fetch(endpoint: EndpointConfig, path: str) -> str | None:
    """The body of a daemon's endpoint (https, verified, when TLS is on); None if it fails."""
    headers = {}
    if endpoint.token:
        headers["Authorization"] = f"Bearer {endpoint.token.reveal()}"
    elif endpoint.basic_auth_user and endpoint.basic_auth_password:
        pair = f"{endpoint.basic_auth_user}:{endpoint.basic_auth_password.reveal()}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    context = client_context(endpoint) if endpoint.tls_cert is not None else None
    request = urllib.request.Request(endpoint_url(endpoint, path), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=3, context=context) as response:
            return response.read().decode("utf-8")
    except (OSError, http.client.HTTPException, UnicodeDecodeError):
        return None  # HTTPError (an answer other than 2xx) and TLS errors are OSErrors


def metric_sums(text: str, prefix: str) -> dict[str, float]:
    """Samples named ``prefix...`` summed over their labels (``name``), and summed per value
    of each label (``name{label="value"}``)."""
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith(prefix):
                continue
            keys = [sample.name] + [f'{sample.name}{{{k}="{v}"}}' for k, v in sample.labels.items()]
            for key in keys:
                sums[key] = sums.get(key, 0.0) + sample.value
    return sums


def hubs(config: Config) -> Section:
    from hubkeeper.watchers.hubs.state import StateStore

    body = fetch(config.watcher.endpoint, "/status")
    if body is not None:
        return {"source": "watcher", **json.loads(body)}
    state = StateStore(Path(config.watcher.state_file)).load()
    if state is None:
        return {"source": "unavailable"}
    return {
        "source": "saved state (the watcher does not answer)",
        "active": state.active,
        "generation": state.generation,
        "frozen": state.frozen,
        "last_failover": state.last_failover,
        "hubs": {},
    }


def daemon_metrics(endpoint: EndpointConfig, prefix: str) -> Section:
    body = fetch(endpoint, "/metrics")
    if body is None:
        return {"source": "unavailable"}
    return {"source": "daemon", **metric_sums(body, prefix)}


def alerts(config: Config) -> Section:
    for url in config.watcher.alertmanager_urls:
        try:
            response = requests.get(
                f"{url.rstrip('/')}/api/v2/alerts",
                params={"active": "true", "silenced": "false", "inhibited": "false"},
                timeout=3,
            )
            response.raise_for_status()
        except requests.RequestException:
            continue
        firing = [
            {"name": a["labels"]["alertname"], "severity": a["labels"].get("severity", ""),
             "hub": a["labels"].get("hub", ""), "summary": a["annotations"].get("summary", "")}
            for a in response.json()
        ]  # fmt: skip
        return {"source": url, "firing": sorted(firing, key=lambda a: (a["severity"], a["name"]))}
    return {"source": "unavailable", "firing": []}


def storage(config: Config) -> Section:
    """Each storage watcher's ``/status``, by address; None where one does not answer."""
    local = f"{config.storage.endpoint.listen}:{config.storage.endpoint.port}"
    nodes: dict[str, Any] = {}
    for address in dict.fromkeys([local, *config.culler.storage_watchers]):
        host, _, port = address.rpartition(":")
        endpoint = dataclasses.replace(config.storage.endpoint, listen=host, port=int(port))
        body = fetch(endpoint, "/status")
        nodes[address] = json.loads(body) if body is not None else None
    answered = sum(document is not None for document in nodes.values())
    return {"source": f"{answered} of {len(nodes)} storage watchers", "nodes": nodes}


def supervised(folder: Path) -> Section:
    """The local stack supervisor's record of its daemons, if one is beside the config."""
    try:
        record = json.loads((folder / SUPERVISED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"source": "none", "daemons": {}}
    source = f"the local stack's supervisor, process {record['supervisor_pid']}"
    if not _alive(record["supervisor_pid"]):
        source += " (gone: this record is stale)"
    return {"source": source, "daemons": record["daemons"]}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def collect(config: Config) -> dict[str, Section]:
    return {
        "hubs": hubs(config),
        # hubkeeper_containers_* and, from the exporter that keeps a swarm's books, per node
        "containers": daemon_metrics(config.containers.endpoint, "hubkeeper_"),
        "shipper": daemon_metrics(config.shipper.endpoint, "hubkeeper_shipper_"),
        "culler": daemon_metrics(config.culler.endpoint, "hubkeeper_culler_"),
        "storage": storage(config),
        "alerts": alerts(config),
    }


def render(view: dict[str, Section], now: float | None = None) -> str:
    now = time.time() if now is None else now
    lines = [*render_hubs(view["hubs"])]
    containers = view["containers"]
    lines.append(f"user servers ({containers['source']})")
    if containers["source"] == "daemon":
        lines.append(
            f"  containers {containers.get('hubkeeper_containers_seen', 0):.0f}"
            f"   hub reports ready {containers.get('hubkeeper_containers_hub_servers', 0):.0f}"
            f"   orphans {containers.get('hubkeeper_containers_orphans', 0):.0f}"
            f"   missing {containers.get('hubkeeper_containers_missing', 0):.0f}"
            f"   docker {'up' if containers.get('hubkeeper_containers_docker_up') else 'DOWN'}"
        )
        lines += render_nodes(containers)
    shipper = view["shipper"]
    lines.append(f"log shipping ({shipper['source']})")
    if shipper["source"] == "daemon":
        lines.append(
            f"  lag {shipper.get('hubkeeper_shipper_lag_bytes', 0):.0f} bytes"
            f" / {shipper.get('hubkeeper_shipper_lag_seconds', 0):.1f} s"
            f"   spool {shipper.get('hubkeeper_shipper_spool_bytes', 0):.0f} bytes"
            f"   dead letters {shipper.get(DEAD_LETTERS, 0):.0f}"
            f"   output {'up' if shipper.get('hubkeeper_shipper_output_up') else 'DOWN'}"
        )
    culler = view["culler"]
    lines.append(f"culler ({culler['source']})")
    if culler["source"] == "daemon":
        last = culler.get("hubkeeper_culler_last_cycle_timestamp_seconds", 0)
        when = f"{now - last:.0f} s ago" if last else "none yet"
        lines.append(
            f"  last cycle {when}, {culler.get('hubkeeper_culler_cycle_duration_seconds', 0):.2f} s"
            f"   culled {culler.get('hubkeeper_culler_culls_total', 0):.0f}"
            f"   errors {culler.get('hubkeeper_culler_errors_total', 0):.0f}"
        )
    if "storage" in view:
        lines += render_storage(view["storage"])
    if view.get("daemons", {}).get("daemons"):
        lines += render_supervised(view["daemons"], now)
    firing = view["alerts"]["firing"]
    lines.append(f"alerts firing ({view['alerts']['source']}): {len(firing) or 'none'}")
    lines += [f"  {a['severity']:<8} {a['name']:<32} {a['summary']}" for a in firing]
    return "\n".join(lines)


def render_nodes(containers: Section) -> list[str]:
    """A line per Swarm node (the cluster exporter's gauges), then the cluster's total."""
    up_prefix = 'hubkeeper_swarm_node_up{node="'
    nodes = sorted(key[len(up_prefix) : -2] for key in containers if key.startswith(up_prefix))
    if not nodes:
        return []

    def gauge(name: str, node: str) -> float:
        return containers.get(f'hubkeeper_swarm_node_{name}{{node="{node}"}}', 0.0)

    lines = [
        f"  node {node:<20} {'up' if gauge('up', node) else 'DOWN':<5}"
        f" servers {gauge('servers', node):.0f}   missing {gauge('missing_servers', node):.0f}"
        for node in nodes
    ]
    up = sum(1 for node in nodes if gauge("up", node))
    servers = containers.get("hubkeeper_swarm_node_servers", 0.0)
    lines.append(f"  cluster: {len(nodes)} nodes, {up} up, {servers:.0f} servers")
    return lines


def render_storage(view: Section) -> list[str]:
    """A line per node: each mount's state and free space, the NFS servers, Owncloud, and
    the user servers on hung storage."""
    lines = [f"notebook storage ({view['source']})"]
    for address, node in view["nodes"].items():
        if node is None:
            lines.append(f"  {address:<21} does not answer")
            continue
        parts = []
        for name, mount in node["mounts"].items():
            capacity = mount.get("capacity") or {}
            free = ""
            if capacity.get("size_bytes") and capacity.get("inodes"):
                space = 100 * capacity["free_bytes"] / capacity["size_bytes"]
                inodes = 100 * capacity["free_inodes"] / capacity["inodes"]
                free = f" ({space:.0f}% free, inodes {inodes:.0f}%)"
            state = mount["state"]
            parts.append(f"{name} {state.upper() if state in ('hung', 'failed') else state}{free}")
        parts += [f"NFS {n} {r['state'] if r else 'unknown'}" for n, r in node["nfs"].items()]
        if node.get("owncloud"):
            parts.append(f"Owncloud {node['owncloud']['state']}")
        lines.append(f"  {node['node']:<21} " + "   ".join(parts))
        hung = node.get("servers_on_hung_storage") or []
        if hung:
            names = ", ".join(s["user"] + (f"/{s['server']}" if s["server"] else "") for s in hung)
            lines.append(f"    servers on hung storage: {names}")
    return lines


def render_supervised(view: Section, now: float) -> list[str]:
    """A line per supervised daemon: its state, its restarts, its last exit and when."""
    lines = [f"daemons (restarted on failure by {view['source']})"]
    for name, daemon in view["daemons"].items():
        state = daemon["state"]
        line = f"  {name:<21} {state.upper() if state == 'failed' else state:<10}"
        line += f" restarts {daemon['restarts']}"
        if daemon["last_exit"]:
            line += f"   last exit {daemon['last_exit']} {now - daemon['last_exit_at']:.0f} s ago"
        if state == "failed":
            line += " (a configuration error: not restarted)"
        lines.append(line)
    return lines


def render_hubs(view: Section) -> list[str]:
    if view["source"] == "unavailable":
        return ["hubs (the watcher does not answer and has no saved state)"]
    lines = [
        f"hubs ({view['source']})",
        f"  active hub   {view['active']}   generation {view['generation']}"
        + ("   FAILOVER FROZEN" if view.get("frozen") else ""),
    ]
    for name, hub in view.get("hubs", {}).items():
        probe = hub.get("last_probe") or {}
        detail = "" if probe.get("ok", True) else f" (failed {probe.get('failed_check')})"
        marker = "*" if name == view["active"] else " "
        lines.append(f"  {marker} {name:<10} {hub['state']}{detail}")
    for host, check in (view.get("nginx_config") or {}).items():
        if check["error"]:
            failed = check["repair_error"]
            lines.append(f"  NGINX config ({host}) REFUSED by nginx -t: {check['error']}"
                         + (f"; not replaced: {failed}" if failed else ""))  # fmt: skip
        elif not check["generated"]:
            lines.append(
                f"  NGINX config ({host}) differs from the template's (until the next switch)"
            )
    last = view.get("last_failover")
    if last:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["at"]))
        lines.append(
            f"  last failover {last['from']} -> {last['to']} at {at} ({last['reason']}, "
            f"{last['duration_seconds']} s)"
        )
    else:
        lines.append("  last failover: none")
    return lines


def status(config: Config, args: argparse.Namespace) -> int:
    view = {**collect(config), "daemons": supervised(Path(args.config).resolve().parent)}
    print(json.dumps(view, indent=2) if args.json else render(view))
    return 0 if view["hubs"]["source"] != "unavailable" else 1
