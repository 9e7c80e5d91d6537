import gzip
import http.client
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry, Counter

from hubkeeper.config import ConfigError, EndpointConfig, Secret
from hubkeeper.endpoint import EXPOSITION, EndpointServer, accepts_gzip, endpoint_url
from hubkeeper.loader import from_dict
from hubkeeper.status import fetch
from tests.certs import Pki, make_pki

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


BIG = b"".join(b'{"channel": "c%d", "value": %d}\n' % (i, i) for i in range(2000))


def big(path: str, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
    return 200, "application/json", BIG


@pytest.fixture
def serve() -> Iterator:
    servers: list[EndpointServer] = []

    def start(config: EndpointConfig, health: Health | None = None) -> str:
        registry = CollectorRegistry()
        Counter("hubkeeper_test_events_total", "Events.", registry=registry).inc(3)
        routes = {"/prtg/": prtg, "/broken/": broken, "/big/": big}
        server = EndpointServer(config, registry, health or Health(), routes)
        server.start()
        servers.append(server)
        assert server.port != 0
        return endpoint_url(replace(config, port=server.port), "")

    yield start
    for server in servers:
        server.stop()


def test_metrics_healthz_and_routes_without_auth(serve, capsys) -> None:
    health = Health()
    url = serve(EndpointConfig(port=0), health)

    metrics = requests.get(f"{url}/metrics", timeout=5)
    assert metrics.status_code == 200
    assert metrics.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
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


# --- compression ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("gzip", True),  # what Prometheus sends
        ("gzip, deflate, br", True),
        ("deflate, GZIP;q=0.5", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip;q=0.0, *", False),  # named and refused: the wildcard does not bring it back
        ("*;q=0", False),
        ("deflate", False),
        ("gzip;q=nonsense", False),
        ("", False),
        (None, False),
    ],
)
def test_accepts_gzip(header: str | None, accepted: bool) -> None:
    assert accepts_gzip(header) is accepted


def raw_get(url: str, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    """A request without any client-side decoding, to see what goes over the wire."""
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=5)
    connection.request("GET", path, headers=headers)
    return connection.getresponse()


def test_gzip_when_the_client_accepts_it(serve) -> None:
    base = serve(EndpointConfig(port=0))
    plain = raw_get(base, "/big/", {})
    assert plain.getheader("Content-Encoding") is None
    assert plain.getheader("Vary") == "Accept-Encoding"
    assert plain.read() == BIG

    packed = raw_get(base, "/big/", {"Accept-Encoding": "gzip"})
    body = packed.read()
    assert packed.getheader("Content-Encoding") == "gzip"
    assert int(packed.getheader("Content-Length")) == len(body) < len(BIG) / 5
    assert gzip.decompress(body) == BIG

    refused = raw_get(base, "/big/", {"Accept-Encoding": "gzip;q=0, identity"})
    assert refused.getheader("Content-Encoding") is None and refused.read() == BIG


def test_small_bodies_are_sent_as_they_are(serve) -> None:
    base = serve(EndpointConfig(port=0))
    metrics = raw_get(base, "/metrics", {"Accept-Encoding": "gzip"})
    assert metrics.getheader("Content-Type") == EXPOSITION
    assert metrics.getheader("Content-Encoding") is None and metrics.getheader("Vary") is None
    assert b"hubkeeper_test_events_total 3.0" in metrics.read()


# --- TLS -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def pem(path: Path) -> Secret:
    return Secret(path.read_text())


def tls(pki: Pki, mutual: bool = False, **more) -> EndpointConfig:
    config = EndpointConfig(
        port=0, tls_cert=pem(pki.server[0]), tls_key=pem(pki.server[1]), tls_ca=pem(pki.ca)
    )
    if mutual:
        config = replace(
            config,
            tls_client_ca=pem(pki.ca),
            tls_client_cert=pem(pki.client[0]),
            tls_client_key=pem(pki.client[1]),
        )
    return replace(config, **more)


def test_https_with_the_server_certificate_verified(serve, pki) -> None:
    base = serve(tls(pki))
    assert base.startswith("https://127.0.0.1:")
    metrics = requests.get(f"{base}/metrics", verify=str(pki.ca), timeout=5)
    assert metrics.status_code == 200 and "hubkeeper_test_events_total 3.0" in metrics.text
    with pytest.raises(requests.exceptions.SSLError):  # the test CA is in no trust store
        requests.get(f"{base}/healthz", timeout=5)
    with pytest.raises(requests.ConnectionError):  # no plain HTTP on the TLS port
        requests.get(base.replace("https:", "http:") + "/healthz", timeout=5)
    # the server is not held up by the refused connections
    assert requests.get(f"{base}/healthz", verify=str(pki.ca), timeout=5).status_code == 200


def test_mutual_tls_refuses_unknown_and_missing_client_certificates(serve, pki) -> None:
    base = serve(tls(pki, mutual=True))
    ca = str(pki.ca)
    known = requests.get(f"{base}/metrics", verify=ca, cert=tuple(map(str, pki.client)), timeout=5)
    assert known.status_code == 200
    for cert in (tuple(map(str, pki.stranger)), None):
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{base}/healthz", verify=ca, cert=cert, timeout=5)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_is_refused(serve, pki) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(pki.ca)
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client speak TLS 1.1 at all

    def handshake(port: int) -> str:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            old.wrap_socket(raw, server_hostname="127.0.0.1") as wrapped,
        ):
            return str(wrapped.version())

    # the client does speak TLS 1.1: a server that allows it gets it
    lenient = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    lenient.minimum_version = ssl.TLSVersion.TLSv1_1
    lenient.set_ciphers("DEFAULT:@SECLEVEL=0")
    lenient.load_cert_chain(pki.server[0], pki.server[1])
    with socket.create_server(("127.0.0.1", 0)) as listener:
        accepted = threading.Thread(
            target=lambda: lenient.wrap_socket(listener.accept()[0], server_side=True).close()
        )
        accepted.start()
        assert handshake(listener.getsockname()[1]) == "TLSv1.1"
        accepted.join(5)

    port = int(serve(tls(pki)).rpartition(":")[2])
    with pytest.raises(ssl.SSLError):
        handshake(port)


def test_status_fetches_over_verified_mutual_tls(serve, pki) -> None:
    config = tls(pki, mutual=True)
    port = int(serve(config).rpartition(":")[2])
    assert "hubkeeper_test_events_total 3.0" in (
        fetch(replace(config, port=port), "/metrics") or ""
    )
    # without the CA it falls back to the system trust store, which does not know the test CA
    assert fetch(replace(config, port=port, tls_ca=None), "/metrics") is None
    # and without its client certificate the endpoint refuses it
    anonymous = replace(config, port=port, tls_client_cert=None, tls_client_key=None)
    assert fetch(anonymous, "/metrics") is None


def test_tls_files_are_read_relative_to_the_config_file(pki) -> None:
    folder = pki.ca.parent
    endpoint = {
        "tls_cert_file": pki.server[0].name,
        "tls_key_file": pki.server[1].name,
        "tls_client_ca_file": pki.ca.name,
        "tls_ca_file": pki.ca.name,
        "tls_client_cert_file": pki.client[0].name,
        "tls_client_key_file": pki.client[1].name,
    }
    config = from_dict({"watcher": {"endpoint": endpoint}}, base=folder).watcher.endpoint
    assert (
        config.tls_key is not None and config.tls_key.reveal() == pki.server[1].read_text().strip()
    )
    assert "PRIVATE KEY" not in repr(config)
    assert endpoint_url(config, "/metrics") == "https://127.0.0.1:9101/metrics"


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ({"tls_cert_file": "server.pem"}, "tls_key_file: expected together with tls_cert_file"),
        ({"tls_key_file": "server.key"}, "tls_cert_file: expected together with tls_key_file"),
        (
            {"tls_client_ca_file": "test-ca.pem"},
            "tls_cert_file: expected together with tls_client_ca_file",
        ),
        (
            {
                "tls_cert_file": "server.pem",
                "tls_key_file": "server.key",
                "tls_client_ca_file": "test-ca.pem",
            },
            "tls_client_cert_file: expected together with tls_client_ca_file",
        ),  # fmt: skip
        ({"tls_ca_file": "test-ca.pem"}, "tls_cert_file: expected together with tls_ca_file"),
        ({"tls_cert_file": "missing.pem", "tls_key_file": "server.key"}, "tls_cert_file: got"),
    ],
)
def test_half_configured_tls_is_a_config_error(pki, given: dict, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        from_dict({"culler": {"endpoint": given}}, base=pki.ca.parent)
    assert f"culler.endpoint.{problem}" in raised.value.problems[0]


def test_tls_pem_from_the_environment(pki, serve) -> None:
    environ = {
        "HUBKEEPER_SHIPPER_ENDPOINT_TLS_CERT": pki.server[0].read_text(),
        "HUBKEEPER_SHIPPER_ENDPOINT_TLS_KEY": pki.server[1].read_text(),
    }
    config = from_dict({"shipper": {"endpoint": {"port": 9999}}}, environ=environ).shipper.endpoint
    base = serve(replace(config, port=0))
    assert requests.get(f"{base}/healthz", verify=str(pki.ca), timeout=5).status_code == 200
