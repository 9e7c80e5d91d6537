"""A real three-node Docker Swarm in network namespaces (deploy/swarm.py): formed, a
host-network service task placed on a worker and reached from the root namespace over
the test's own interface only, and nothing left behind."""

from pathlib import Path

import docker
import pytest
import requests
from docker.types import EndpointSpec

from hubkeeper.config import DockerConfig
from hubkeeper.deploy.stack import http_ok, wait_for
from hubkeeper.deploy.swarm import HOST_INTERFACE, Swarm, SwarmError, run
from hubkeeper.hub.images import BASE_IMAGE, ensure_base

PORT = 8765


def test_a_swarm_of_three_runs_a_host_network_task_on_a_worker(tmp_path: Path) -> None:
    root_engine = docker.DockerClient(base_url=DockerConfig().url, timeout=300)
    ensure_base(root_engine, print)
    with Swarm(tmp_path / "swarm", 3) as swarm:
        manager = swarm.manager.client()
        nodes = {n.attrs["Description"]["Hostname"]: n.attrs for n in manager.nodes.list()}
        assert set(nodes) == {"hk-node1", "hk-node2", "hk-node3"}
        assert all(node["Status"]["State"] == "ready" for node in nodes.values())
        assert {node["Status"]["Addr"] for node in nodes.values()} == {
            n.address for n in swarm.nodes
        }
        swarm.load_image(root_engine, BASE_IMAGE)
        worker = swarm.workers[1]
        manager.services.create(
            BASE_IMAGE,
            ["python3", "-m", "http.server", str(PORT)],
            name="web",
            networks=["host"],
            endpoint_spec=EndpointSpec(mode="dnsrr"),
            constraints=[f"node.hostname=={worker.name}"],
            container_labels={"org.hubkeeper.user": "alice"},
        )

        def running() -> bool:
            tasks = manager.services.get("web").tasks()
            return any(t["Status"]["State"] == "running" for t in tasks)

        wait_for(running, 60, "the task to run")
        (container,) = worker.client().containers.list(filters={"label": "org.hubkeeper.user"})
        assert container.labels["org.hubkeeper.user"] == "alice"  # container labels, per task
        assert swarm.reachable(worker.address) == worker.address
        url = f"http://{worker.address}:{PORT}/"
        wait_for(lambda: http_ok(url), 30, "the task's port")
        assert "Directory listing" in requests.get(url, timeout=5).text
        with pytest.raises(SwarmError, match="not a test address"):
            swarm.reachable("192.0.2.1")  # refused before anything is sent
    assert HOST_INTERFACE not in run("ip", "-br", "link").stdout
    assert "hk-node" not in run("ip", "netns", "list").stdout
    assert not (tmp_path / "swarm" / "node1" / "data").exists()
