"""The real stack (Docker engine, images, hub with DockerSpawner, NGINX), once per session."""

import secrets
from collections.abc import Iterator

import pytest

from deploy.elasticsearch import Elasticsearch, running_elasticsearch
from deploy.stack import Stack, running_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("stack")
    with running_stack(workdir, hub_name=f"test-{secrets.token_hex(3)}") as running:
        yield running


@pytest.fixture(scope="session")
def elasticsearch() -> Iterator[Elasticsearch]:
    """A real single-node Elasticsearch (unprivileged user, free port), once per session."""
    with running_elasticsearch() as instance:
        yield instance
