"""The dashboards against real data: a real stack (two hubs with DockerSpawner and the
watcher, NGINX, the container exporter, the culler, the shipper) runs what ops would see
in a day (logins, spawns, a failed and a stuck spawn, requests, a traceback, an OOM kill, a
server that dies, an orphaned container, a cull, a dead letter, an Elasticsearch pause, a
failover); the shipper and the
exporter put it into the real Elasticsearch. Every panel's query answers with data, the
export passes the structural check, the preview pages show every panel."""

import html
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from hubkeeper.config import ShipperElasticsearchConfig
from hubkeeper.dashboards.kibana import check, saved_objects, to_ndjson
from hubkeeper.dashboards.panels import (
    AMBER,
    BLUE,
    DASHBOARDS,
    GREEN,
    HUB_OVERVIEW,
    RED,
    Panel,
    Where,
    top,
)
from hubkeeper.dashboards.preview import PALETTE, preview, render_page, run
from hubkeeper.deploy import hubctl
from hubkeeper.deploy.elasticsearch import Elasticsearch, log_store_overrides
from hubkeeper.deploy.stack import Stack, running_stack, wait_for
from hubkeeper.hub.images import BASE_IMAGE
from hubkeeper.hubapi import HubAPIError
from hubkeeper.shippers.mapping import templates
from tests.integration.helpers import series, start_and_wait, start_frozen, user_containers
from tests.integration.shipping import dynamic_json_keys, search

NAME = "dash"
INDICES = f"{NAME}-logs-*"
ANN, BOB, IDLE, REFUSED = "dash-ann", "dash-bob", "dash-cat", "dash-eve"
STUCK, DEAD = "dash-stu", "dash-dee"  # a spawn that hangs; a server that dies
STUCK_AFTER = 15.0  # the culler's pending_timeout: well above a normal spawn here (2-4 s)
GHOST = "dash-ghost"
WATCHER = {"interval": 0.5, "probe_timeout": 0.5, "startup_grace": 1.0, "hold_time": 600.0,
           "fence_timeout": 10.0, "start_timeout": 45.0, "confirm_timeout": 5.0}  # fmt: skip
PAUSE = 4.0  # seconds Elasticsearch is stopped (SIGSTOP) while lines keep coming
PANELS = [p for d in DASHBOARDS for p in d.panels]


@dataclass
class Run:
    stack: Stack
    es: Elasticsearch
    paused: tuple[float, float]  # when Elasticsearch was stopped and continued (unix time)

    def docs(self, query: dict[str, Any], index: str = INDICES) -> list[dict[str, Any]]:
        return search(self.es, index, query)

    def newest(self, *conditions: dict[str, Any]) -> dict[str, Any] | None:
        body = {"size": 1, "sort": [{"@timestamp": "desc"}],
                "query": {"bool": {"filter": list(conditions)}}}  # fmt: skip
        answer = requests.post(f"{self.es.url}/{INDICES}/_search", json=body, timeout=30).json()
        hits = answer.get("hits", {}).get("hits", [])
        return hits[0]["_source"] if hits else None

    def arrived(self, what: str, *conditions: dict[str, Any], timeout: float = 60) -> None:
        wait_for(lambda: self.newest(*conditions) is not None, timeout, what, interval=0.5)


def term(field: str, value: object) -> dict[str, Any]:
    return {"term": {field: value}}


def at_least(field: str, value: float) -> dict[str, Any]:
    return {"range": {field: {"gte": value}}}


def after(unix_time: float) -> dict[str, Any]:
    return {"range": {"@timestamp": {"gt": int(unix_time * 1000), "format": "epoch_millis"}}}


def overrides(
    workdir: Path, es: Elasticsearch, probe: Path, conflict: Path
) -> dict[str, dict[str, Any]]:
    """``hubkeeper up``'s log store sections, with short intervals and this module's indices."""
    sections: dict[str, dict[str, Any]] = log_store_overrides(workdir, es.url)
    shipper = sections["shipper"]
    shipper.update(status_interval=1.0, poll_interval=0.05, scan_interval=0.2,
                   batch_max_wait=0.2, retry_backoff=0.2, retry_backoff_max=2.0)  # fmt: skip
    shipper["elasticsearch"].update(index_prefix=f"{NAME}-logs", dead_letter_index=f"{NAME}-dead",
                                    retention_days=0, timeout=10.0)  # fmt: skip
    shipper["sources"].append({"name": "probe", "parser": "json", "paths": [str(probe)]})
    shipper["sources"].append(
        {"name": "conflict", "parser": "json", "dataset": "conflict", "paths": [str(conflict)]}
    )
    sections["containers"].update(snapshot_interval=1.0, reconcile_seconds=1.0, cache_seconds=0,
                                  resync_seconds=2.0, orphan_grace=0.0)  # fmt: skip
    sections["storage"].update(snapshot_interval=1.0, interval=1.0)
    sections["jupyterhub"] = {"poll_interval": 1}  # dee's death is noticed at once
    sections["culler"] = {"timeout": 3.0, "cull_every": 1.0, "exempt_users": [ANN, BOB, DEAD],
                          "busy_cpu_percent": 0.0, "pending_timeout": STUCK_AFTER,
                          "stop_stuck": True}  # fmt: skip
    return sections


def login(stack: Stack, user: str) -> int:
    """The hub's login form, as a browser posts it; the status of the answer."""
    session = requests.Session()
    session.get(f"{stack.public_url}/hub/login", timeout=10)
    form = {"username": user, "password": "any", "_xsrf": session.cookies.get("_xsrf", "")}
    return session.post(f"{stack.public_url}/hub/login", data=form, timeout=30).status_code


def hub_day(stack: Stack) -> None:
    """Logins (one refused), a failed and three good spawns, requests, a 404, a traceback."""
    client = stack.client()
    headers = {"Authorization": f"token {client.config.token.reveal()}"}
    client.create_users([ANN, BOB, IDLE, REFUSED, STUCK, DEAD])
    for user in (ANN, BOB):
        assert login(stack, user) == 200
    login(stack, "")  # refused
    with pytest.raises(HubAPIError):
        client.start_server(REFUSED, options={"image": "debian:bookworm"})  # not allowed
    for user in (ANN, BOB, IDLE, DEAD):
        start_and_wait(client, user)
        status = requests.get(f"{stack.public_url}/user/{user}/api/status", headers=headers,
                              timeout=10)  # fmt: skip
        assert status.status_code == 200
    assert requests.get(f"{stack.public_url}/hub/api/nowhere", timeout=10).status_code == 404
    broken = requests.post(f"{stack.public_url}/hub/api/users", data="{not json",
                           headers=headers, timeout=10)  # fmt: skip
    assert broken.status_code == 400  # logged with its traceback


def container_trouble(stack: Stack) -> None:
    """An OOM kill in ann's server, a CPU burner in bob's, an orphaned container."""
    (ann,) = user_containers(stack, ANN)
    hog = ann.exec_run(["python3", "-c", "b'x' * (1536 * 2**20)"])  # the limit is 512M
    assert hog.exit_code == 137, hog.output[-500:]  # SIGKILL by the OOM killer
    (bob,) = user_containers(stack, BOB)
    bob.exec_run(["timeout", "6", "python3", "-c", "while True: pass"], detach=True)
    labels = stack.config.labels
    stack.docker.containers.run(
        BASE_IMAGE, ["sleep", "600"], detach=True, network_mode="host",
        name=f"{GHOST}-{secrets.token_hex(3)}",
        labels={labels.user: GHOST, labels.server: "", labels.hub: stack.config.jupyterhub.name},
    )  # fmt: skip


def stuck_spawn(stack: Stack) -> None:
    """A container paused as soon as it starts: the spawn stays pending until the culler
    (``pending_timeout``, ``stop_stuck``) stops it."""
    client = stack.client()
    start_frozen(stack, client, STUCK)
    wait_for(lambda: "" not in client.user(STUCK)["servers"], 90, "the stuck spawn to be stopped")


def conflicting_lines(es: Elasticsearch, conflict: Path) -> None:
    """Two JSON lines whose field types conflict where a site's own template maps JSON keys
    dynamically (hubkeeper's flattened ``hubkeeper.json`` never conflicts): the second
    one is dead-lettered."""
    dynamic_json_keys(es, f"{NAME}-logs", "conflict")
    with conflict.open("a") as out:
        out.write('{"event": "probe", "probe_value": 1}\n')
        out.write('{"event": "probe", "probe_value": {"nested": 1}}\n')


def pause_elasticsearch(es: Elasticsearch, probe: Path) -> tuple[float, float]:
    """Stop Elasticsearch (SIGSTOP) while lines keep coming; continue it."""
    assert es.pid is not None
    stopped = time.time()
    os.kill(es.pid, signal.SIGSTOP)
    try:
        with probe.open("a") as out:
            for number in range(int(PAUSE * 10)):
                out.write(f'{{"event": "probe_during_pause", "number": {number}}}\n')
                out.flush()
                time.sleep(0.1)
    finally:
        os.kill(es.pid, signal.SIGCONT)
    return stopped, time.time()


def fail_over(stack: Stack) -> None:
    """kill -9 of hub a and its proxy; the watcher makes b active."""
    config = stack.config
    proxy, hub = hubctl.proxy_pid(config, "a"), hubctl.launched_pid(config, "a")
    assert proxy is not None and hub is not None
    os.killpg(hub, signal.SIGKILL)
    os.kill(proxy, signal.SIGKILL)
    wait_for(lambda: stack.nginx.live() == ("b", 2), 90, "the failover to hub b")


@pytest.fixture(scope="module")
def shipped(
    tmp_path_factory: pytest.TempPathFactory, elasticsearch: Elasticsearch
) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("dash-stack")
    probe = workdir / "logs" / "probe.log"
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.touch()
    conflict = workdir / "logs" / "conflict.log"
    conflict.touch()
    with running_stack(
        workdir, hub_name=f"dash-{secrets.token_hex(3)}", watcher=WATCHER,
        daemons=("export-containers", "cull", "ship-logs", "watch-storage"),
        overrides=overrides(workdir, elasticsearch, probe, conflict),
    ) as stack:  # fmt: skip
        hub_day(stack)
        container_trouble(stack)
        stuck_spawn(stack)
        (dead,) = user_containers(stack, DEAD)
        dead.kill()  # SIGKILL: the hub finds it stopped with exit code 137
        conflicting_lines(elasticsearch, conflict)
        result = Run(stack, elasticsearch, pause_elasticsearch(elasticsearch, probe))
        result.arrived(
            "ann's OOM kill",
            term("event.dataset", "hubkeeper.containers"),
            term("user.name", ANN),
            at_least("hubkeeper.container.memory.oom_kills", 1),
        )
        result.arrived("the orphan", term("hubkeeper.container.orphan", True),
                       term("user.name", GHOST))  # fmt: skip
        result.arrived(
            "the notebook storage's state",
            term("event.dataset", "hubkeeper.storage"),
            term("hubkeeper.storage.state", "ok"),
            term("labels.mount", "notebooks"),
        )
        result.arrived(
            "the stuck spawn stopped",
            term("event.action", "cull_decision"),
            term("event.reason", "stuck_spawn"),
            term("hubkeeper.event.action", "stop"),
        )
        result.arrived("the cull", term("event.action", "cull_decision"),
                       term("user.name", IDLE), term("hubkeeper.event.action", "stop"))  # fmt: skip
        result.arrived("a dead letter", term("event.dataset", "hubkeeper.shipper"),
                       at_least("hubkeeper.shipper.events.dead_lettered", 1))  # fmt: skip
        result.arrived("dee's exit code", term("event.action", "server-exited"),
                       term("user.name", DEAD), term("process.exit_code", 137))  # fmt: skip
        fail_over(stack)
        switched = time.time()
        result.arrived("the failover", term("event.action", "failover_done"), timeout=90)
        result.arrived("the switch", term("event.action", "nginx_switched"))
        result.arrived("the hub's state from hub b", term("event.dataset", "hubkeeper.hub"),
                       term("hubkeeper.hub.up", True), after(switched))  # fmt: skip
        requests.post(f"{elasticsearch.url}/{INDICES}/_refresh", timeout=30)
        yield result


@pytest.mark.parametrize("panel", PANELS, ids=lambda p: p.id)
def test_every_panel_query_returns_data(shipped: Run, panel) -> None:
    result = run(panel, shipped.es.url, INDICES, interval=10)
    assert not result.empty, f"{panel.title}: no data"
    if panel.series is not None and panel.series.kind == "filters":
        labels = {label for label, _ in panel.series.filters}  # refused login, failed spawn
        assert {s for _, s, v in result.points if v} == labels


def test_container_snapshots_agree_with_the_exporter(shipped: Run) -> None:
    config = shipped.stack.config
    exporter = f"http://127.0.0.1:{config.containers.endpoint.port}/metrics"
    text = requests.get(exporter, timeout=10).text
    snapshot = term("event.dataset", "hubkeeper.containers")
    ann = shipped.newest(snapshot, term("user.name", ANN))
    assert ann is not None
    (oom,) = series(text, "container_oom_events_total", name=ann["container.name"])
    assert ann["hubkeeper.container.memory.oom_kills"] == oom >= 1
    assert ann["hubkeeper.container.memory.limit.bytes"] == 512 * 2**20
    assert ann["hubkeeper.container.cpu.limit.cores"] == 1.0
    assert 0 < ann["hubkeeper.container.memory.pct_of_limit"] < 100
    assert ann["hubkeeper.container.orphan"] is False
    assert ann["container.image.name"] in config.jupyterhub.allowed_images
    busy = shipped.docs({"bool": {"filter": [snapshot, term("user.name", BOB)]}})
    assert max(d.get("hubkeeper.container.cpu.pct_of_limit", 0) for d in busy) > 20  # the burner
    ghost = shipped.newest(snapshot, term("user.name", GHOST))
    assert ghost is not None and ghost["hubkeeper.container.orphan"] is True
    hub = shipped.newest(term("event.dataset", "hubkeeper.hub"), term("hubkeeper.hub.up", True))
    assert hub is not None
    assert (hub["hubkeeper.hub.servers"], hub["hubkeeper.hub.orphans"]) == (2, 1)  # cat culled
    assert hub["hubkeeper.hub.containers"] == 3 and hub["labels.hub"] == config.jupyterhub.name
    documents = "hubkeeper_containers_snapshot_documents_total"
    assert series(text, documents, outcome="indexed")[0] > 0
    assert series(text, documents, outcome="dropped") == [0.0]


def test_figures_taken_while_elasticsearch_was_stopped_arrived_afterwards(shipped: Run) -> None:
    stopped, continued = (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) for t in shipped.paused
    )
    during = {"range": {"@timestamp": {"gt": stopped, "lt": continued}}}
    status = shipped.docs(
        {"bool": {"filter": [term("event.dataset", "hubkeeper.shipper"), during]}}
    )
    assert len(status) >= PAUSE - 2  # one a second, measured while the output hung
    assert max(d["hubkeeper.shipper.lag.seconds"] for d in status) > 1
    assert max(d["hubkeeper.shipper.lag.bytes"] for d in status) > 0
    snapshots = shipped.docs({"bool": {"filter": [term("event.dataset", "hubkeeper.hub"), during]}})
    assert len(snapshots) >= PAUSE - 2
    lines = shipped.docs(term("event.action", "probe_during_pause"))
    assert sorted(d["hubkeeper.json"]["number"] for d in lines) == list(range(int(PAUSE * 10)))


def test_other_json_keys_are_searchable_aggregatable_and_shown(shipped: Run) -> None:
    """Keys of JSON lines live in the flattened hubkeeper.json: a query, a terms
    aggregation and the preview's table columns (``fields``) reach them by name (Kibana's
    data views do not list them: the dashboards use typed fields only)."""
    during = (Where("event.action", ("probe_during_pause",)), Where("hubkeeper.json.number"))
    numbers = [str(n) for n in range(int(PAUSE * 10))]
    table = run(Panel("t", "t", "search", during, columns=("hubkeeper.json.number",)),
                shipped.es.url, INDICES)  # fmt: skip
    assert table.rows and {row["hubkeeper.json.number"] for row in table.rows} <= set(numbers)
    bars = run(Panel("b", "b", "bar", during, x=top("hubkeeper.json.number", 100)),
               shipped.es.url, INDICES)  # fmt: skip
    assert sorted(x for x, _, _ in bars.points) == sorted(numbers)
    one = shipped.docs({"term": {"hubkeeper.json.number": 7}})
    assert [d["hubkeeper.json"]["number"] for d in one] == [7]


def test_failover_adoption_and_refusals_have_their_fields(shipped: Run) -> None:
    """Hub b names the servers it adopted; the refused spawn has its reason; DockerSpawner's
    lines name the containers."""
    adopted = shipped.docs(term("event.action", "server-adopted"))
    assert {ANN, BOB} <= {d["user.name"] for d in adopted}
    assert all(d["log.file.path"].endswith("hub-b.log") for d in adopted)
    refused = shipped.docs({"bool": {"filter": [
        term("http.response.status_code", 400), {"exists": {"field": "event.reason"}},
        {"wildcard": {"url.path": f"*/users/{REFUSED}/server"}}]}})  # fmt: skip
    assert refused and "not in allowed list" in refused[0]["event.reason"]
    created = shipped.docs(term("event.action", "container-created"))
    assert {d["container.image.name"] for d in created} <= set(
        shipped.stack.config.jupyterhub.allowed_images
    )
    assert all(len(d["container.id"]) == 7 and d["container.name"] for d in created)


def assert_aggregatable(url: str, index: str) -> None:
    """Every field a panel aggregates or filters on is in the indices' field list (as
    Kibana's data view asks for it) and aggregatable; every column is listed."""
    aggregated = {name for p in PANELS for name in p.fields()[0]}
    columns = {name for p in PANELS for name in p.columns}
    caps = requests.get(f"{url}/{index}/_field_caps",
                        params={"fields": ",".join(sorted(aggregated | columns))},
                        timeout=30).json()  # fmt: skip
    assert sorted((aggregated | columns) - set(caps["fields"])) == [], "not in the field list"
    for name in aggregated:
        assert all(c["aggregatable"] for c in caps["fields"][name].values()), name


def test_fields_are_aggregatable_in_the_real_indices(shipped: Run) -> None:
    assert_aggregatable(shipped.es.url, INDICES)


def test_panel_fields_are_listed_before_any_document(elasticsearch: Elasticsearch) -> None:
    """Kibana fails a panel whose field its data view does not list: a new daily index,
    made from the template before any document arrived, already lists every panel's field."""
    config = ShipperElasticsearchConfig(index_prefix="fresh-logs", dead_letter_index="fresh-dead")
    for name, body in templates(config).items():
        answer = requests.put(f"{elasticsearch.url}/_index_template/{name}", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
    index = "fresh-logs-2025.01.05"
    requests.put(f"{elasticsearch.url}/{index}", timeout=30).raise_for_status()
    try:
        count = requests.get(f"{elasticsearch.url}/{index}/_count", timeout=30).json()["count"]
        assert count == 0
        assert_aggregatable(elasticsearch.url, index)
    finally:
        requests.delete(f"{elasticsearch.url}/{index}", timeout=30)


def test_export_and_preview_commands(shipped: Run, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "hubkeeper.cli", "dashboards"]
    target = tmp_path / "dashboards.ndjson"
    subprocess.run([*cli, "export", str(target), "--index-prefix", f"{NAME}-logs"],
                   check=True, timeout=60)  # fmt: skip
    assert check(target.read_text()) == []
    assert target.read_text() == to_ndjson(saved_objects(f"{NAME}-logs"))
    out = tmp_path / "preview"
    done = subprocess.run(
        [*cli, "preview", "--out", str(out), "--elasticsearch", shipped.es.url,
         "--index-prefix", f"{NAME}-logs"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no data" not in done.stdout
    for dashboard in DASHBOARDS:
        page = (out / f"{dashboard.id}.html").read_text()
        assert page.count('class="panel"') == len(dashboard.panels)
        assert 'class="empty"' not in page
        for panel in dashboard.panels:
            section = page.split(f'id="{panel.id}"', 1)[1].split("</section>", 1)[0]
            assert 'class="point' in section or 'class="metric point' in section, panel.id
    reliability = (out / "hubkeeper-reliability.html").read_text()
    watcher_events = reliability.split('id="watcher-events"', 1)[1].split("</section>", 1)[0]
    assert "<td>active_down</td>" in watcher_events  # failover_done's reason, nested in json
    users = (out / "hubkeeper-users.html").read_text()
    assert f"<td>{GHOST}</td>" in users.split('id="orphan-containers"', 1)[1]


def chromium(page: Path, profile: Path, *arguments: str, height: int = 2200) -> str:
    """Headless Chromium on a page: its stdout (``--dump-dom``: the rendered DOM)."""
    binary = shutil.which("chromium")
    assert binary, "Debian chromium is not installed (deploy/setup.sh installs it)"
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        f"--user-data-dir={profile}", f"--window-size=1400,{height}", *arguments, page.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def pixels(png: bytes) -> list[tuple[int, int, int]]:
    """The RGB pixels of an 8-bit RGB or RGBA, non-interlaced PNG (Chromium's screenshots)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = {}, 8
    while at < len(png):
        size, kind = int.from_bytes(png[at : at + 4]), png[at + 4 : at + 8]
        chunks[kind] = chunks.get(kind, b"") + png[at + 8 : at + 8 + size]
        at += size + 12
    width, height = int.from_bytes(chunks[b"IHDR"][:4]), int.from_bytes(chunks[b"IHDR"][4:8])
    depth, color, interlace = chunks[b"IHDR"][8], chunks[b"IHDR"][9], chunks[b"IHDR"][12]
    assert depth == 8 and color in (2, 6) and interlace == 0
    step = 3 if color == 2 else 4
    raw, stride, previous, out = zlib.decompress(chunks[b"IDAT"]), width * step, None, []
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        up = previous or bytearray(stride)
        for i in range(stride):
            a, b = line[i - step] if i >= step else 0, up[i]
            c = up[i - step] if i >= step else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += [tuple(line[i : i + 3]) for i in range(0, stride, step)]
        previous = line
    return out


def rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def test_preview_renders_in_headless_chromium(shipped: Run, tmp_path: Path) -> None:
    """Every page renders with every panel title; numbers read as people read them: hub
    latency and spawn durations in milliseconds, memory in MiB, never `2.66741e+09`."""
    out = tmp_path / "preview"
    preview(out, shipped.es.url, f"{NAME}-logs")
    texts = {}
    for dashboard in DASHBOARDS:
        page = out / f"{dashboard.id}.html"
        profile = tmp_path / f"profile-{dashboard.id}"
        dom = chromium(page, profile, "--dump-dom")
        texts[dashboard.id] = text = html.unescape(re.sub(r"<[^>]+>", " ", dom))
        for panel in dashboard.panels:
            assert panel.title in text, f"{panel.title} is not on the rendered page"
        assert dom.count('class="point') >= len(dashboard.panels)
        assert not re.search(r"\de[+-]\d", text), "a number in exponent notation"
        shot = tmp_path / f"{dashboard.id}.png"
        chromium(page, profile, f"--screenshot={shot}")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        sections = {p.id: dom.split(f'id="{p.id}"', 1)[1].split("</section>", 1)[0]
                    for p in dashboard.panels}  # fmt: skip
        texts.update({p: html.unescape(re.sub(r"<[^>]+>", " ", t)) for p, t in sections.items()})
    assert re.search(r"\b[1-9][\d,]* ms\b", texts["hub-latency"])  # the axis, in ms
    assert re.search(r"\b[1-9][\d,]* ms\b", texts["spawn-duration"])  # the buckets
    assert re.search(r"\b[1-9][\d,.]* ms\b", texts["spawn-duration-by-user"])
    assert re.search(r"\b[1-9][\d,.]* MiB\b", texts["memory-by-user"])
    assert re.search(r"\b[1-9][\d,.]* ms\b", texts["errors-and-slow"])  # event.duration cells


def test_status_classes_in_conventional_colours_on_the_screenshot(
    shipped: Run, tmp_path: Path
) -> None:
    """The status-class chart alone, screenshotted: the 2xx, 3xx, 4xx and 5xx series are
    drawn in green, blue, amber and red, and no other series colour is on it (the
    palette's greys aside, which text edges have)."""
    (panel,) = [p for p in HUB_OVERVIEW.panels if p.id == "requests-by-status"]
    result = run(panel, shipped.es.url, INDICES, interval=10)
    totals = {c: sum(v for _, s, v in result.points if s == c) for c in ("2xx", "3xx", "4xx")}
    assert min(totals.values()) > 0, totals  # logins (2xx, 3xx redirects), the 404
    page = tmp_path / "status.html"
    page.write_text(render_page(HUB_OVERVIEW, [result], "status classes"))
    shot = tmp_path / "status.png"
    chromium(page, tmp_path / "profile", f"--screenshot={shot}", height=500)
    counts = Counter(pixels(shot.read_bytes()))
    for name, color in (("2xx", GREEN), ("3xx", BLUE), ("4xx", AMBER), ("5xx", RED)):
        # its legend swatch (100 pixels) and its line and points
        assert counts[rgb(color)] >= 150, f"{name}: {counts[rgb(color)]} pixels of {color}"
    coloured = [rgb(c) for c in PALETTE if len(set(rgb(c))) > 1]  # (text edges are grey)
    assert [counts[c] for c in coloured] == [0] * len(coloured)
