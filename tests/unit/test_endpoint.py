import json
from collections.abc import Iterator

import pytest
import requests
from prometheus_client import CollectorRegistry, Counter

from hubkeeper.config import EndpointConfig, Secret
from hubkeeper.endpoint import EndpointServer

TOKEN = "endpoint-token-5f2a"


class Health:
    def __init__(self) -> None:
        self.state = (True, "ok")

    def __call__(self) -> tuple[bool, str]:
        return self.state


def prtg(path: str, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
    body = {"prtg": {"result": [], "text": f"{path} {query.get('user', [''])[0]}"}}
    return 200, "application/json", json.dumps(body).encode()


def broken(path: str, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
    raise RuntimeError("route failed")


@pytest.fixture
def serve() -> Iterator:
    servers: list[EndpointServer] = []

    def start(config: EndpointConfig, health: Health | None = None) -> str:
        registry = CollectorRegistry()
        Counter("hubkeeper_test_events_total", "Events.", registry=registry).inc(3)
        server = EndpointServer(
            config, registry, health or Health(), {"/prtg/": prtg, "/broken/": broken}
        )
        server.start()
        servers.append(server)
        assert server.port != 0
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        server.stop()


def test_metrics_healthz_and_routes_without_auth(serve, capsys) -> None:
    health = Health()
    url = serve(EndpointConfig(port=0), health)

    metrics = requests.get(f"{url}/metrics", timeout=5)
    assert metrics.status_code == 200
    assert metrics.headers["Content-Type"].startswith("text/plain; version=")
    assert "hubkeeper_test_events_total 3.0" in metrics.text

    healthz = requests.get(f"{url}/healthz", timeout=5)
    assert (healthz.status_code, healthz.text) == (200, "ok")
    health.state = (False, "hub a down")
    healthz = requests.get(f"{url}/healthz", timeout=5)
    assert (healthz.status_code, healthz.text) == (503, "hub a down")

    sensor = requests.get(f"{url}/prtg/containers?user=alice", timeout=5)
    assert sensor.status_code == 200
    assert sensor.headers["Content-Type"] == "application/json"
    assert sensor.json()["prtg"]["text"] == "/prtg/containers alice"

    assert requests.get(f"{url}/nothing", timeout=5).status_code == 404
    failed = requests.get(f"{url}/broken/x", timeout=5)
    assert (failed.status_code, failed.text) == (500, "internal error\n")
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 503  # still serving
    assert capsys.readouterr().err == ""  # no http.server request lines on stderr


def test_bearer_token(serve) -> None:
    url = serve(EndpointConfig(port=0, token=Secret(TOKEN)))
    refused = requests.get(f"{url}/metrics", timeout=5)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="hubkeeper"'
    wrong = {"Authorization": "Bearer nope"}
    assert requests.get(f"{url}/metrics", headers=wrong, timeout=5).status_code == 401
    right = {"Authorization": f"Bearer {TOKEN}"}
    assert requests.get(f"{url}/metrics", headers=right, timeout=5).status_code == 200
    assert requests.get(f"{url}/prtg/x", headers=right, timeout=5).status_code == 200
    assert requests.get(f"{url}/prtg/x", timeout=5).status_code == 401
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200  # always open


def test_basic_auth_next_to_bearer(serve) -> None:
    config = EndpointConfig(
        port=0,
        token=Secret(TOKEN),
        basic_auth_user="prtg",
        basic_auth_password=Secret("pa:ss"),
    )
    url = serve(config)
    assert requests.get(f"{url}/metrics", auth=("prtg", "pa:ss"), timeout=5).status_code == 200
    assert requests.get(f"{url}/metrics", auth=("prtg", "wrong"), timeout=5).status_code == 401
    assert requests.get(f"{url}/metrics", auth=("other", "pa:ss"), timeout=5).status_code == 401
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert requests.get(f"{url}/metrics", headers=bearer, timeout=5).status_code == 200
    garbage = {"Authorization": "Basic !!!not-base64"}
    assert requests.get(f"{url}/metrics", headers=garbage, timeout=5).status_code == 401


def test_half_configured_basic_auth_fails_closed(serve) -> None:
    url = serve(EndpointConfig(port=0, basic_auth_user="prtg"))
    assert requests.get(f"{url}/metrics", auth=("prtg", ""), timeout=5).status_code == 401
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200


def test_stop_releases_the_port() -> None:
    server = EndpointServer(EndpointConfig(port=0), CollectorRegistry(), Health())
    server.start()
    url = f"http://127.0.0.1:{server.port}/healthz"
    assert requests.get(url, timeout=5).status_code == 200
    server.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)
