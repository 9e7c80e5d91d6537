"""A daemon's endpoint over mutual TLS, end to end: ``hubkeeper export-containers`` (the
hand-written exposition) serves HTTPS with a client CA, ``hubkeeper alerts render`` writes
the scrape config, a real Prometheus (Debian ``prometheus``) scrapes it, and
``hubkeeper status`` reads it; the exposition is gzipped when asked, with the text format's
content type, and ``promtool check metrics`` finds nothing in it."""

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from hubkeeper.config import DockerConfig, LabelsConfig
from hubkeeper.deploy.stack import (
    ManagedProcess,
    docker_client,
    free_ports,
    http_ok,
    to_toml,
    wait_for,
)
from hubkeeper.hub.images import BASE_IMAGE, ensure_base
from hubkeeper.loader import load
from hubkeeper.status import fetch
from tests.certs import make_pki
from tests.integration.alerting import prometheus_query

ROOT = Path(__file__).resolve().parents[2]
HUBKEEPER = [sys.executable, "-m", "hubkeeper.cli"]
USER = f"tls-{secrets.token_hex(3)}"


def start(name: str, argv: list[str], log: Path) -> ManagedProcess:
    with log.open("ab") as out:
        popen = subprocess.Popen(
            argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    return ManagedProcess(name, popen)


@pytest.fixture(scope="module")
def user_server() -> Iterator[None]:
    """A running container labelled as a user's server: the exporter's hand-written part."""
    client = docker_client(DockerConfig().url)
    assert client is not None
    ensure_base(client, lambda _message: None)
    labels = LabelsConfig()
    container = client.containers.run(
        BASE_IMAGE, ["sleep", "600"], detach=True, network_mode="host",
        labels={labels.user: USER, labels.server: "", labels.hub: "lab", labels.image: BASE_IMAGE},
    )  # fmt: skip
    try:
        yield
    finally:
        container.remove(force=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, user_server: None) -> Iterator[Path]:
    """A config whose endpoint files are relative to it, and the exporter it runs."""
    folder = tmp_path_factory.mktemp("tls-site")
    pki = make_pki(folder / "pki")
    (folder / "pki" / "endpoint.token").write_text(secrets.token_hex(16) + "\n")
    exporter_port, prometheus_port, nobody = free_ports(3)
    config = {
        "watcher": {"alertmanager_urls": [f"http://127.0.0.1:{nobody}"]},  # no one's alerts
        "containers": {
            "reconcile": "off",
            "endpoint": {
                "port": exporter_port,
                "token_file": "pki/endpoint.token",
                "tls_cert_file": f"pki/{pki.server[0].name}",
                "tls_key_file": f"pki/{pki.server[1].name}",
                "tls_client_ca_file": f"pki/{pki.ca.name}",
                "tls_ca_file": f"pki/{pki.ca.name}",
                "tls_client_cert_file": f"pki/{pki.client[0].name}",
                "tls_client_key_file": f"pki/{pki.client[1].name}",
            },
        },
        "alerts": {
            "daemons": ["containers"],
            "prometheus_url": f"http://127.0.0.1:{prometheus_port}",
            "scrape_interval": 1.0,
            "scrape_timeout": 1.0,
            "evaluation_interval": 1.0,
        },
    }
    path = folder / "hubkeeper.toml"
    path.write_text(to_toml(config))
    exporter = start(
        "exporter", [*HUBKEEPER, "export-containers", "--config", str(path)], folder / "exp.log"
    )
    try:
        endpoint = load(path).containers.endpoint
        wait_for(
            lambda: f'jupyterhub_user="{USER}"' in (fetch(endpoint, "/metrics") or ""),
            30,
            "the exporter to serve the user's container over TLS",
        )
        yield path
    finally:
        exporter.stop()


def test_prometheus_scrapes_the_daemon_over_mutual_tls(site: Path) -> None:
    out = site.parent / "alerting"
    rendered = subprocess.run(
        [*HUBKEEPER, "alerts", "render", "--config", str(site), "--out", str(out), "--check"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    jobs = yaml.safe_load((out / "prometheus.yml").read_text())["scrape_configs"]
    (job,) = [job for job in jobs if job["job_name"] == "hubkeeper-containers"]
    pki = site.parent / "pki"
    assert job["scheme"] == "https"
    assert job["tls_config"] == {
        "ca_file": str(pki / "test-ca.pem"),
        "cert_file": str(pki / "prometheus.pem"),
        "key_file": str(pki / "prometheus.key"),
    }

    config = load(site)
    prometheus = start(
        "prometheus",
        [
            "prometheus",
            f"--config.file={out / 'prometheus.yml'}",
            f"--storage.tsdb.path={site.parent / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{config.alerts.prometheus_url.rpartition(':')[2]}",
        ],
        site.parent / "prometheus.log",
    )
    url = config.alerts.prometheus_url
    try:
        wait_for(lambda: http_ok(f"{url}/-/ready"), 30, "Prometheus to start")
        query = 'up{job="hubkeeper-containers"}'
        wait_for(
            lambda: [r["value"][1] for r in prometheus_query(url, query)] == ["1"],
            60,
            "Prometheus to scrape the exporter over TLS",
            interval=0.5,
        )
        samples = prometheus_query(
            url, 'hubkeeper_containers_docker_up{job="hubkeeper-containers"}'
        )
        assert [s["value"][1] for s in samples] == ["1"]
        targets = requests.get(f"{url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        (target,) = [t for t in targets if t["labels"]["job"] == "hubkeeper-containers"]
        assert target["health"] == "up" and target["scrapeUrl"].startswith("https://127.0.0.1:")
    finally:
        prometheus.stop()


def test_status_and_promtool_read_it_over_tls(site: Path, tmp_path: Path) -> None:
    shown = subprocess.run(
        [*HUBKEEPER, "status", "--json", "--config", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    view = json.loads(shown.stdout)
    assert view["containers"]["source"] == "daemon", shown.stderr
    assert view["containers"]["hubkeeper_containers_docker_up"] == 1.0

    endpoint = load(site).containers.endpoint
    body = fetch(endpoint, "/metrics")
    assert body is not None and f'jupyterhub_user="{USER}"' in body
    pki = site.parent / "pki"
    packed = requests.get(
        f"https://127.0.0.1:{endpoint.port}/metrics",
        headers={"Authorization": f"Bearer {endpoint.token.reveal()}", "Accept-Encoding": "gzip"},
        verify=str(pki / "test-ca.pem"),
        cert=(str(pki / "prometheus.pem"), str(pki / "prometheus.key")),
        timeout=10,
    )
    assert packed.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert packed.headers["Content-Encoding"] == "gzip"
    assert int(packed.headers["Content-Length"]) < len(packed.content) / 3
    assert packed.text == body
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=body, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0 and checked.stdout + checked.stderr == "", checked.stderr
