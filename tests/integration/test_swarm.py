"""A real three-node Docker Swarm in network namespaces (deploy/swarm.py), and the hub's
SwarmSpawner on it: servers are services whose tasks run on the workers, labelled on
their containers, reached through NGINX at their node's address."""

import secrets
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import docker
import pytest
import requests
from docker.types import EndpointSpec

from hubkeeper.config import DockerConfig
from hubkeeper.deploy.stack import http_ok, running_stack, wait_for
from hubkeeper.deploy.swarm import HOST_INTERFACE, Swarm, SwarmError, run
from hubkeeper.hub.images import BASE_IMAGE, SINGLEUSER_IMAGE, ensure_images
from hubkeeper.watchers.containers.exporter import ContainerExporter
from hubkeeper.watchers.hubs.probe import proxy_routes
from tests.integration.helpers import series, server_status, start_and_wait

PORT = 8765


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    root_engine = docker.DockerClient(base_url=DockerConfig().url, timeout=300)
    images = ensure_images(root_engine, print)
    workdir = tmp_path_factory.mktemp("swarm")
    with Swarm(workdir, 3) as running:
        running.load_images([BASE_IMAGE, *images])
        yield running
    assert HOST_INTERFACE not in run("ip", "-br", "link").stdout
    assert "hk-node" not in run("ip", "netns", "list").stdout
    assert not (workdir / "node1" / "data").exists()


def test_a_swarm_of_three_runs_a_host_network_task_on_a_worker(swarm: Swarm) -> None:
    manager = swarm.manager.client()
    nodes = {n.attrs["Description"]["Hostname"]: n.attrs for n in manager.nodes.list()}
    assert set(nodes) == {"hk-node1", "hk-node2", "hk-node3"}
    assert all(node["Status"]["State"] == "ready" for node in nodes.values())
    assert {node["Status"]["Addr"] for node in nodes.values()} == {n.address for n in swarm.nodes}
    worker = swarm.workers[1]
    service = manager.services.create(
        BASE_IMAGE,
        ["python3", "-m", "http.server", str(PORT)],
        name="web",
        networks=["host"],
        endpoint_spec=EndpointSpec(mode="dnsrr"),
        constraints=[f"node.hostname=={worker.name}"],
        container_labels={"org.hubkeeper.user": "web"},
    )
    try:
        wait_for(
            lambda: any(t["Status"]["State"] == "running" for t in service.tasks()),
            60,
            "the task to run",
        )
        (container,) = worker.client().containers.list(filters={"label": "org.hubkeeper.user"})
        assert container.labels["org.hubkeeper.user"] == "web"  # container labels, per task
        url = f"http://{swarm.reachable(worker.address)}:{PORT}/"
        wait_for(lambda: http_ok(url), 30, "the task's port")
        assert "Directory listing" in requests.get(url, timeout=5).text
        with pytest.raises(SwarmError, match="not a test address"):
            swarm.reachable("192.0.2.1")  # refused before anything is sent
    finally:
        service.remove()


def test_servers_are_swarm_services_on_the_workers_reached_at_their_nodes(
    swarm: Swarm, tmp_path: Path
) -> None:
    hub_name = f"sw-{secrets.token_hex(3)}"
    overrides = {
        "docker": {"url": swarm.manager.url},
        "jupyterhub": {"spawner": "swarm", "placement_constraints": ["node.role==worker"]},
    }
    with running_stack(
        tmp_path / "stack", hub_name=hub_name, overrides=overrides, listen=swarm.host_address
    ) as stack:
        labels = stack.config.labels
        client = stack.client()
        client.create_users(["alice", "bob"])
        for user in ("alice", "bob"):
            start_and_wait(client, user)
        manager = swarm.manager.client()
        placed = {}
        for service in manager.services.list(filters={"label": f"{labels.hub}={hub_name}"}):
            (task,) = [t for t in service.tasks() if t["Status"]["State"] == "running"]
            node = manager.nodes.get(task["NodeID"]).attrs["Description"]["Hostname"]
            placed[service.attrs["Spec"]["Labels"][labels.user]] = node
        assert set(placed) == {"alice", "bob"}
        assert set(placed.values()) == {worker.name for worker in swarm.workers}  # spread
        hub = stack.config.jupyterhub
        routes = proxy_routes(hub.instance("a"), hub.proxy_token, timeout=5).values()
        targets = {route["user"]: route["target"] for route in routes if route.get("user")}
        for user, node_name in placed.items():
            node = next(n for n in swarm.nodes if n.name == node_name)
            (container,) = node.client().containers.list(filters={"label": f"{labels.user}={user}"})
            assert container.labels[labels.hub] == hub_name
            assert container.labels[labels.image] == SINGLEUSER_IMAGE
            assert targets[user].startswith(f"http://{node.address}:")
            assert server_status(stack, user).status_code == 200  # through NGINX and the proxy
        for node in swarm.workers:  # an exporter per node sees its own engine, names its node
            section = replace(stack.config.containers, docker_url=node.url, reconcile="off")
            exporter = ContainerExporter(replace(stack.config, containers=section))
            try:
                exporter.discovery.resync()
                text = exporter.render_metrics().decode()
            finally:
                exporter.close()
            (user,) = [u for u, name in placed.items() if name == node.name]
            assert series(text, "container_memory_working_set_bytes", jupyterhub_user=user,
                          node=node.name)  # fmt: skip
            assert len(series(text, "container_memory_working_set_bytes", hub=hub_name)) == 1
