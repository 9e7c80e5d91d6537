"""The real stack (Docker engine, images, hub with DockerSpawner, NGINX), once per session;
the swarm and its test network, once per session for every module with hosts in namespaces."""

import secrets
from collections.abc import Iterator

import docker
import pytest

from hubkeeper.config import DockerConfig
from hubkeeper.deploy.elasticsearch import Elasticsearch, running_elasticsearch
from hubkeeper.deploy.netns import run
from hubkeeper.deploy.stack import (
    Stack,
    docker_client,
    running_stack,
    start_docker_engine,
    wait_for_docker,
)
from hubkeeper.deploy.swarm import HOST_INTERFACE, Swarm
from hubkeeper.hub.images import BASE_IMAGE, ensure_images

MAIN_LANE = "main_lane"


def pytest_itemcollected(item: pytest.Item) -> None:
    """``tests/run`` runs two lanes at once: ``-m main_lane``, the integration tests that
    share the Docker engine (its containers, the hubs' labels) or network namespaces (the
    test subnets), one after another; and ``-m "not main_lane"``, the unit tests and the
    modules marked ``beside``, which need neither. The main lane mostly waits (for alerts,
    failovers, servers), so the other fits beside it."""
    if item.get_closest_marker("beside") is None:
        item.add_marker(MAIN_LANE)


@pytest.fixture(scope="session", autouse=True)
def docker_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """One Docker engine for the whole session (started only if none answers), so that a
    stack that started it cannot stop it under the tests that follow; none for a session
    of the lane beside (which needs none, and must not stop the main lane's)."""
    if not any(item.get_closest_marker(MAIN_LANE) for item in request.session.items):
        yield
        return
    url = DockerConfig().url
    started = None
    if docker_client(url) is None:
        log_path = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
        started = start_docker_engine(log_path)
        wait_for_docker(url, log_path)
    yield
    if started is not None:
        started.stop()


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


@pytest.fixture(scope="session")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    """A three-node swarm with the images on every node; its test network carries the other
    test hosts too (a module removes the hosts it added)."""
    root_engine = docker.DockerClient(base_url=DockerConfig().url, timeout=300)
    images = ensure_images(root_engine, print)
    workdir = tmp_path_factory.mktemp("swarm")
    with Swarm(workdir, 3) as running:
        running.load_images([BASE_IMAGE, *images])
        yield running
    assert HOST_INTERFACE not in run("ip", "-br", "link").stdout
    assert "hk-" not in run("ip", "netns", "list").stdout
    assert not (workdir / "node1" / "data").exists()
