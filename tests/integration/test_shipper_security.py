"""The Elasticsearch output against a real Elasticsearch with security on: HTTPS verified
with the configured CA, basic auth from a password file, and refusals (a wrong password,
no credentials, an unknown CA, plain HTTP) that become :class:`Unavailable` with a message
that names the cause and never the password. (The integ-test zip cannot issue API keys:
its security index needs a module it lacks; an API key is only sent as documented, in an
``Authorization: ApiKey`` header.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from hubkeeper.config import ShipperElasticsearchConfig
from hubkeeper.deploy.elasticsearch import Elasticsearch, Security, running_elasticsearch
from hubkeeper.loader import from_dict
from hubkeeper.shippers.delivery import Unavailable
from hubkeeper.shippers.elasticsearch import ElasticsearchOutput
from hubkeeper.shippers.store import Record
from tests.certs import Pki, make_pki

pytestmark = pytest.mark.beside  # runs beside the main lane (tests/run)

NAME = "secured"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secured(pki: Pki) -> Iterator[Elasticsearch]:
    security = Security(cert=pki.server[0], key=pki.server[1], ca=pki.ca)
    with running_elasticsearch(security=security) as instance:
        yield instance


def settings(es: Elasticsearch, folder: Path, **changes: Any) -> ShipperElasticsearchConfig:
    """The shipper's section as a site writes it: the password in a file."""
    assert es.security is not None
    (folder / "password").write_text(es.security.password + "\n")
    section = {
        "hosts": [es.url], "username": es.security.user, "password_file": "password",
        "ca_file": str(es.security.ca), "index_prefix": f"{NAME}-logs",
        "dead_letter_index": f"{NAME}-dead", "replicas": 0, "timeout": 10.0, **changes,
    }  # fmt: skip
    section = {key: value for key, value in section.items() if value is not None}
    return from_dict({"shipper": {"elasticsearch": section}}, base=folder).shipper.elasticsearch


def record(n: int) -> Record:
    doc = b'{"@timestamp":"2026-12-01T00:00:00.000Z","message":"line %d"}' % n
    return Record.of("key", n, n + 1, f"{NAME}-logs-app-2026.12.01", f"id{n}", "app", doc)


def test_https_and_basic_auth_deliver(
    secured: Elasticsearch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = ElasticsearchOutput(settings(secured, tmp_path))
    output.install_templates()
    assert [r.status for r in output.bulk([record(1), record(2)])] == [201, 201]
    options = secured.client_options()
    requests.post(f"{secured.url}/{NAME}-logs-*/_refresh", timeout=30, **options)
    found = requests.get(f"{secured.url}/{NAME}-logs-*/_count", timeout=30, **options).json()
    assert found["count"] == 2
    assert secured.security is not None and secured.security.password not in capsys.readouterr().out


Changes = Callable[[Elasticsearch, Pki], dict[str, Any]]
REFUSALS: dict[str, tuple[Changes, str]] = {
    "wrong password": (
        lambda es, pki: {"password_file": "wrong"},
        "HTTP 401: security_exception: unable to authenticate user",
    ),
    "no credentials": (
        lambda es, pki: {"username": None, "password_file": None},
        "HTTP 401: security_exception: missing authentication credentials",
    ),
    "unknown CA": (lambda es, pki: {"ca_file": str(pki.ca.parent / "other-ca.pem")}, "SSLError"),
    "plain HTTP": (lambda es, pki: {"hosts": [es.url.replace("https:", "http:")]}, "ProtocolError"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_refusal_is_unavailable_and_names_no_secret(
    secured: Elasticsearch, pki: Pki, tmp_path: Path, case: str
) -> None:
    changes, expected = REFUSALS[case]
    (tmp_path / "wrong").write_text("not-the-password\n")
    output = ElasticsearchOutput(settings(secured, tmp_path, **changes(secured, pki)))
    with pytest.raises(Unavailable) as refused:
        output.bulk([record(3)])
    assert str(refused.value).startswith(expected)
    assert secured.security is not None
    assert secured.security.password not in str(refused.value)
    assert "not-the-password" not in str(refused.value)
