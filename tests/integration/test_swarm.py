"""A real three-node Docker Swarm in network namespaces (deploy/swarm.py), and the hub's
SwarmSpawner on it: servers are services whose tasks run on the workers, labelled on
their containers, reached through NGINX at their node's address. The books of the whole
cluster (one exporter reconciling from the manager, one exporter per node), the culler
reading each server's CPU on its node, an orphan service, and a worker cut off."""

import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from docker.types import EndpointSpec

from hubkeeper import prtg
from hubkeeper.deploy.elasticsearch import Elasticsearch
from hubkeeper.deploy.netns import run
from hubkeeper.deploy.stack import Stack, http_ok, running_stack, wait_for
from hubkeeper.deploy.swarm import Node, Swarm, SwarmError
from hubkeeper.hub.images import ALT_IMAGE, BASE_IMAGE, SINGLEUSER_IMAGE
from hubkeeper.redact import redact
from hubkeeper.watchers.hubs.probe import proxy_routes
from tests.integration.alerting import alertmanager_alerts, prometheus_alerts, wait_for_one
from tests.integration.helpers import (
    CULL_TIMEOUT,
    cull,
    series,
    server_status,
    start_and_wait,
    stop_and_wait,
)
from tests.integration.shipping import ShipperRun

PORT = 8765


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


# --- the whole cluster's books ----------------------------------------------------------------


@dataclass
class Cluster:
    """A stack whose hub spawns on the swarm's workers; the exporter that keeps the
    cluster's books (on 127.0.0.1, the manager's engine), and one exporter per node inside
    that node's network namespace, at the node's address; Prometheus and Alertmanager."""

    stack: Stack
    swarm: Swarm

    @property
    def port(self) -> int:
        return self.stack.config.containers.endpoint.port

    def books(self) -> str:
        return requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text

    def node_metrics(self, node: Node) -> str:
        url = f"http://{self.swarm.reachable(node.address)}:{self.port}/metrics"
        return requests.get(url, timeout=5).text

    def placed(self) -> dict[str, str]:
        """``docker service ps`` of the hub's services: user -> node of its running task."""
        manager = self.swarm.manager.client()
        labels = self.stack.config.labels
        placed = {}
        for service in manager.services.list(filters={"label": f"{labels.hub}={self.hub}"}):
            running = [t for t in service.tasks() if t["Status"]["State"] == "running"]
            for task in running:
                node = manager.nodes.get(task["NodeID"]).attrs["Description"]["Hostname"]
                placed[service.attrs["Spec"]["Labels"][labels.user]] = node
        return placed

    @property
    def hub(self) -> str:
        return self.stack.config.jupyterhub.name

    def node(self, name: str) -> Node:
        return next(node for node in self.swarm.nodes if node.name == name)


@pytest.fixture(scope="module")
def cluster(swarm: Swarm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The stack ``hubkeeper up --nodes 3`` runs, with short intervals."""
    overrides = {
        # the alternative image only on the last worker
        "jupyterhub": {
            "placement": [
                {"image": ALT_IMAGE, "constraints": [f"node.hostname=={swarm.workers[-1].name}"]}
            ]
        },
        "containers": {"reconcile_seconds": 1.0, "orphan_grace": 2.0},
        "alerts": {"rule_time_scale": 1 / 60},
    }
    with running_stack(
        tmp_path_factory.mktemp("cluster") / "stack",
        hub_name=f"sw-{secrets.token_hex(3)}",
        overrides=overrides,
        prometheus=True,
        daemons=("export-containers",),
        swarm=swarm,
    ) as stack:
        yield Cluster(stack, swarm)


def test_servers_are_services_on_both_workers_and_every_view_agrees(cluster: Cluster) -> None:
    stack, swarm = cluster.stack, cluster.swarm
    client = stack.client()
    client.create_users(["alice", "bob"])
    for user in ("alice", "bob"):
        start_and_wait(client, user)
    placed = cluster.placed()
    assert set(placed) == {"alice", "bob"}
    assert set(placed.values()) == {worker.name for worker in swarm.workers}  # spread
    labels = stack.config.labels
    hub = stack.config.jupyterhub
    routes = proxy_routes(hub.instance("a"), hub.proxy_token, timeout=5).values()
    targets = {route["user"]: route["target"] for route in routes if route.get("user")}
    for user, node_name in placed.items():
        node = cluster.node(node_name)
        (container,) = node.client().containers.list(filters={"label": f"{labels.user}={user}"})
        assert container.labels[labels.hub] == cluster.hub
        assert container.labels[labels.image] == SINGLEUSER_IMAGE
        assert targets[user].startswith(f"http://{node.address}:")
        assert server_status(stack, user).status_code == 200  # through NGINX and the proxy
        text = cluster.node_metrics(node)  # each node's exporter: its own engine, its name
        assert series(text, "container_memory_working_set_bytes", jupyterhub_user=user,
                      node=node.name)  # fmt: skip
        assert len(series(text, "container_memory_working_set_bytes", hub=cluster.hub)) == 1

    def balanced() -> bool:
        books = cluster.books()
        return series(books, "hubkeeper_containers_hub_servers") == [2.0] and all(
            series(books, "hubkeeper_swarm_node_servers", node=node.name)
            == [float(list(placed.values()).count(node.name))]
            for node in swarm.nodes
        )

    wait_for(balanced, 30, "the cluster exporter to count both servers on their nodes")
    books = cluster.books()
    assert series(books, "hubkeeper_swarm_node_up") == [1.0, 1.0, 1.0]
    assert series(books, "hubkeeper_containers_missing") == [0.0]
    assert series(books, "hubkeeper_containers_orphans") == [0.0]
    status = subprocess.run(
        [sys.executable, "-m", "hubkeeper.cli", "status", "--config", str(stack.config_path)],
        capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    for node in swarm.workers:
        assert re.search(rf"node {node.name} +up +servers 1 +missing 0", status), status
    assert "cluster: 3 nodes, 3 up, 2 servers" in status
    sensor = requests.get(f"http://127.0.0.1:{cluster.port}/prtg/cluster", timeout=10).json()
    assert prtg.check(sensor) == []
    by_name = {c["channel"]: c["value"] for c in sensor["prtg"]["result"]}
    assert (by_name["Nodes"], by_name["Nodes down"], by_name["Servers"]) == (3, 0, 2)
    assert [by_name[f"Servers on {node.name}"] for node in swarm.nodes] == [0, 1, 1]
    for user, node_name in placed.items():  # top users across the nodes, from their exporters
        assert f"{user} on {node_name} " in sensor["prtg"]["text"]


def test_a_shipper_on_each_worker_ships_its_servers_logs_once_with_node_and_user(
    cluster: Cluster, elasticsearch: Elasticsearch, tmp_path: Path
) -> None:
    for user, node_name in cluster.placed().items():
        node = cluster.node(node_name)
        run = ShipperRun(
            tmp_path / node.name,
            elasticsearch,
            f"swarm-{node.name}",
            [{"name": "containers", "type": "docker"}],
            sections={"docker": {"url": node.url}, "jupyterhub": {"name": cluster.hub}},
            shipper={"host_name": node.name},
        ).start()
        try:
            check_shipped_once(cluster, run, user, node)
        finally:
            assert run.stop() == 0


def check_shipped_once(cluster: Cluster, run: ShipperRun, user: str, node: Node) -> None:
    """Every line of the user's server on ``node`` arrived once, named with node and user."""
    label = f"{cluster.stack.config.labels.user}={user}"
    (container,) = node.client().containers.list(filters={"label": label})
    # what each line says, without its "[I date logger]" prefix (parsed into fields)
    lines = [redact(line).split("] ", 1)[-1] for line in container.logs().decode().splitlines()]
    assert lines, f"{user}'s server wrote nothing"

    def shipped() -> list[dict]:
        return [d for d in run.docs() if d.get("container.id") == container.id]

    wait_for(
        lambda: all(line in "\n".join(d["message"] for d in shipped()) for line in lines),
        60, f"every line of {user}'s server on {node.name}",
    )  # fmt: skip
    docs = shipped()
    assert {d["host.name"] for d in docs} == {node.name}
    assert {d["labels.jupyterhub_user"] for d in docs} == {user}
    offsets = [d["log.offset"] for d in docs]
    assert len(offsets) == len(set(offsets)), "a line was indexed twice"


def test_the_culler_reads_cpu_on_each_node_keeps_the_busy_and_culls_the_idle(
    cluster: Cluster,
) -> None:
    placed = cluster.placed()
    busy = cluster.node(placed["alice"]).client()
    (container,) = busy.containers.list(
        filters={"label": f"{cluster.stack.config.labels.user}=alice"}
    )
    container.exec_run(["python3", "-c", "while True: pass"], detach=True)
    time.sleep(CULL_TIMEOUT + 1)  # both servers are idle past the timeout now
    run = cull(cluster.stack, "swarm-busy", busy_cpu_percent=20.0)
    assert run.code == 0, run.output
    assert run.outcome("alice") == ("keep", "busy", "kept")
    assert run.outcome("bob") == ("stop", "idle", "done")
    assert run.decisions()[("alice", "")]["cpu_percent"] > 20  # measured on alice's node
    client = cluster.stack.client()
    assert "" not in client.user("bob")["servers"]
    wait_for(lambda: set(cluster.placed()) == {"alice"}, 30, "bob's service to go")


def test_an_orphan_service_on_a_worker_is_reported_then_removed(cluster: Cluster) -> None:
    labels = cluster.stack.config.labels
    worker = cluster.swarm.workers[0]
    manager = cluster.swarm.manager.client()
    orphan = manager.services.create(
        BASE_IMAGE,
        ["sleep", "600"],
        name="jupyter-ghost",
        networks=["host"],
        endpoint_spec=EndpointSpec(mode="dnsrr"),
        constraints=[f"node.hostname=={worker.name}"],
        labels={labels.user: "ghost", labels.hub: cluster.hub},
        container_labels={labels.user: "ghost", labels.hub: cluster.hub},
    )
    wait_for(lambda: series(cluster.books(), "hubkeeper_containers_orphans") == [1.0], 60,
             "the orphan service to be reported")  # fmt: skip
    kept = cull(cluster.stack, "swarm-orphan-report", orphans="report", orphan_grace=1.0)
    assert kept.outcome("ghost", kind="orphan") == ("report", "orphan", "reported")
    assert manager.services.list(filters={"id": orphan.id})
    removed = cull(cluster.stack, "swarm-orphan-remove", orphans="remove", orphan_grace=1.0)
    assert removed.outcome("ghost", kind="orphan") == ("remove_container", "orphan", "done")
    assert not manager.services.list(filters={"id": orphan.id})  # the service, not a task
    wait_for(lambda: series(cluster.books(), "hubkeeper_containers_orphans") == [0.0], 30,
             "the orphan to be gone from the books")  # fmt: skip


def test_a_worker_cut_off_is_named_alerted_held_and_balances_when_back(cluster: Cluster) -> None:
    stack, swarm = cluster.stack, cluster.swarm
    placed = cluster.placed()
    lost = cluster.node(placed["alice"])
    other = next(worker for worker in swarm.workers if worker is not lost)
    run("ip", "-n", lost.name, "link", "set", "eth0", "down")
    try:
        wait_for(
            lambda: series(cluster.books(), "hubkeeper_swarm_node_missing_servers",
                           node=lost.name) == [1.0],
            60,
            f"alice's server to be missing on {lost.name}",
        )  # fmt: skip
        books = cluster.books()
        assert series(books, "hubkeeper_swarm_node_up", node=lost.name) == [0.0]
        assert series(books, "hubkeeper_swarm_node_up", node=other.name) == [1.0]
        assert series(books, "hubkeeper_containers_missing") == [1.0]
        assert series(cluster.node_metrics(other), "hubkeeper_containers_scrape_duration_seconds")
        alert = wait_for_one(
            lambda: alertmanager_alerts(stack.alertmanager_url, "HubkeeperSwarmNodeDown"),
            60, "the node-down alert in Alertmanager",
        )  # fmt: skip
        assert len(alertmanager_alerts(stack.alertmanager_url, "HubkeeperSwarmNodeDown")) == 1
        assert alert["labels"]["node"] == lost.name
        assert alert["labels"]["severity"] == "critical"
        assert "1 ready servers missing" in alert["annotations"]["description"]
        held = cull(stack, "swarm-lost", busy_cpu_percent=20.0, busy_unknown="cull")
        assert held.outcome("alice") == ("report", "node_down", "reported")
        assert "" in stack.client().user("alice")["servers"]
    finally:
        run("ip", "-n", lost.name, "link", "set", "eth0", "up")
    wait_for(lambda: series(cluster.books(), "hubkeeper_swarm_node_up") == [1.0, 1.0, 1.0], 60,
             f"{lost.name} to be ready again")  # fmt: skip
    wait_for(
        lambda: not prometheus_alerts(stack.prometheus_url, "HubkeeperSwarmNodeDown"),
        60, "the node-down alert to resolve",
    )  # fmt: skip

    def balanced() -> bool:
        books = cluster.books()
        servers = series(books, "hubkeeper_containers_hub_servers")
        return series(books, "hubkeeper_containers_missing") == [0.0] and servers == [
            float(len(cluster.placed()))
        ]

    wait_for(balanced, 90, "the books to balance again")


def test_servers_of_an_image_go_where_its_placement_rule_says(cluster: Cluster) -> None:
    client = cluster.stack.client()
    users = ["carol", "dave"]  # two: spread alone would put them on different workers
    client.create_users(users)
    for user in users:
        start_and_wait(client, user, options={"image": ALT_IMAGE})
    placed = cluster.placed()
    assert {placed[user] for user in users} == {cluster.swarm.workers[-1].name}
    for user in users:
        stop_and_wait(client, user)
