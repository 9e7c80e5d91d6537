"""The dashboards against real data: a real hub run (logins, spawns, a failed spawn,
requests, a traceback) shipped by the real shipper into the real Elasticsearch; every
panel's query answers with data, the export passes the structural check, the preview
pages show every panel."""

import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from dashboards.kibana import check, saved_objects, to_ndjson
from dashboards.panels import DASHBOARDS, AnyOf, Where
from dashboards.preview import preview, run
from deploy.elasticsearch import Elasticsearch
from deploy.stack import Stack, wait_for
from hubkeeper.hubapi import HubAPIError
from tests.integration.helpers import start_and_wait, stop_and_wait
from tests.integration.shipping import stop_shippers  # noqa: F401  (autouse)
from tests.integration.test_shipper_stack import stack_shipper

NAME = "dash"
USERS = ["dash-ann", "dash-bob"]


def login(stack: Stack, user: str) -> int:
    """The hub's login form, as a browser posts it; the status of the answer."""
    session = requests.Session()
    session.get(f"{stack.public_url}/hub/login", timeout=10)
    form = {"username": user, "password": "any", "_xsrf": session.cookies.get("_xsrf", "")}
    return session.post(f"{stack.public_url}/hub/login", data=form, timeout=30).status_code


def hub_run(stack: Stack) -> None:
    """What ops would see in a day, in a minute."""
    client = stack.client()
    token = client.config.token.reveal()
    headers = {"Authorization": f"token {token}"}
    client.create_users(USERS)
    for user in USERS:
        assert login(stack, user) == 200
    login(stack, "")  # refused
    for user in USERS:
        start_and_wait(client, user)
        status = requests.get(f"{stack.public_url}/user/{user}/api/status", headers=headers,
                              timeout=10)  # fmt: skip
        assert status.status_code == 200
    assert requests.get(f"{stack.public_url}/hub/api/nowhere", timeout=10).status_code == 404
    broken = requests.post(f"{stack.public_url}/hub/api/users", data="{not json",
                           headers=headers, timeout=10)  # fmt: skip
    assert broken.status_code == 400  # logged with its traceback
    for user in USERS:
        stop_and_wait(client, user)
    with pytest.raises(HubAPIError):
        client.start_server(USERS[0], options={"image": "debian:bookworm"})


@pytest.fixture(scope="module")
def shipped(stack: Stack, elasticsearch: Elasticsearch, tmp_path_factory) -> Elasticsearch:
    shipper = stack_shipper(stack, tmp_path_factory.mktemp("dash"), elasticsearch, NAME).start()
    hub_run(stack)
    nginx_logs = Path(stack.config.nginx.prefix) / "logs"
    shipper.wait_shipped(stack.logs / "hub-a.log", nginx_logs / "access.log")
    container = {"term": {"event.dataset": "container"}}
    wait_for(lambda: len(shipper.docs(query=container)) > 0, 30, "user server lines")
    shipper.stop()
    requests.post(f"{elasticsearch.url}/{NAME}-logs-*/_refresh", timeout=30)
    return elasticsearch


@pytest.mark.parametrize("panel", [p for d in DASHBOARDS for p in d.panels], ids=lambda p: p.id)
def test_every_panel_query_returns_data(shipped: Elasticsearch, panel) -> None:
    result = run(panel, shipped.url, f"{NAME}-logs-*", interval=10)
    assert not result.empty, f"{panel.title}: no data"
    if panel.series is not None and panel.series.kind == "filters":
        labels = {label for label, _ in panel.series.filters}  # refused login, failed spawn
        assert {s for _, s, v in result.points if v} == labels


def test_fields_are_aggregatable_in_the_real_indices(shipped: Elasticsearch) -> None:
    fields = set()
    for panel in (p for d in DASHBOARDS for p in d.panels):
        conditions = [*panel.where]
        for split in (panel.x, panel.series):
            if split is not None:
                fields.add(split.field)
                conditions += [c for _, c in split.filters]
        fields |= {panel.metric.field} - {None}
        for condition in conditions:
            inner = condition.conditions if isinstance(condition, AnyOf) else (condition,)
            fields |= {c.field for c in inner if isinstance(c, Where) and c.phrase is None}
    caps = requests.get(f"{shipped.url}/{NAME}-logs-*/_field_caps",
                        params={"fields": ",".join(sorted(fields))}, timeout=30).json()  # fmt: skip
    for name in fields:
        assert name in caps["fields"], f"{name} is not in the indices"
        assert all(c["aggregatable"] for c in caps["fields"][name].values()), name


def test_export_and_preview_commands(shipped: Elasticsearch, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "hubkeeper.cli", "dashboards"]
    target = tmp_path / "dashboards.ndjson"
    subprocess.run([*cli, "export", str(target), "--index-prefix", f"{NAME}-logs"],
                   check=True, timeout=60)  # fmt: skip
    assert check(target.read_text()) == []
    assert target.read_text() == to_ndjson(saved_objects(f"{NAME}-logs"))
    out = tmp_path / "preview"
    done = subprocess.run(
        [*cli, "preview", "--out", str(out), "--elasticsearch", shipped.url,
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


def test_preview_renders_in_headless_chromium(shipped: Elasticsearch, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "Debian chromium is not installed (deploy/setup.sh installs it)"
    out = tmp_path / "preview"
    preview(out, shipped.url, f"{NAME}-logs")
    for dashboard in DASHBOARDS:
        page = out / f"{dashboard.id}.html"
        shot = tmp_path / f"{dashboard.id}.png"
        command = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={tmp_path / ('profile-' + dashboard.id)}",
            "--window-size=1400,2200",
        ]  # fmt: skip
        dom = subprocess.run(
            [*command, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
        )  # fmt: skip
        assert dom.returncode == 0, dom.stderr[-2000:]
        text = html.unescape(re.sub(r"<[^>]+>", " ", dom.stdout))
        for panel in dashboard.panels:
            assert panel.title in text, f"{panel.title} is not on the rendered page"
        assert dom.stdout.count('class="point') >= len(dashboard.panels)
        subprocess.run([*command, f"--screenshot={shot}", page.as_uri()],
                       capture_output=True, timeout=120, check=True)  # fmt: skip
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
