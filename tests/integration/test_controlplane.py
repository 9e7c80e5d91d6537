"""The control plane on several hosts (deploy/controlplane.py): hubs on two hosts sharing a
real PostgreSQL on a third, two watchers with a lease, two NGINX hosts with a floating
address moved by keepalived, user servers on a real swarm's workers. Every host is a network
namespace on one test bridge; the root namespace sends only to checked test addresses.

The faults, in order, on one plane: the active hub's host dies while the leading watcher's
host is frozen in the middle of the failover; the NGINX host holding the floating address
dies; PostgreSQL stops."""

import os
import signal
import time
from collections.abc import Iterator

import pytest
import requests

from hubkeeper.deploy import hubctl
from hubkeeper.deploy.controlplane import (
    NGINX_HOSTS,
    WATCHERS,
    ControlPlane,
    host,
)
from hubkeeper.deploy.netns import FLOATING_ADDRESS
from hubkeeper.deploy.stack import wait_for
from hubkeeper.deploy.swarm import Swarm
from tests.integration.helpers import start_and_wait
from tests.integration.test_postgres import DatabaseCensus


@pytest.fixture(scope="module")
def plane(swarm: Swarm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(
        tmp_path_factory.mktemp("controlplane"), hub_name="cp", swarm=swarm,
        watcher={"startup_grace": 1.0, "hold_time": 0.0, "alert_resend_interval": 5.0},
    )  # fmt: skip
    try:
        yield plane.up()
    finally:
        plane.down()


@pytest.fixture(scope="module")
def alice(plane: ControlPlane) -> str:
    """Alice's server on a worker; her container's id."""
    client = plane.client()
    client.create_users(["alice"])
    start_and_wait(client, "alice")
    return running_task(plane)


def running_task(plane: ControlPlane) -> str:
    manager = plane.swarm.manager.client()  # type: ignore[union-attr]
    (service,) = manager.services.list(filters={"label": f"{plane.config.labels.hub}=cp"})
    (task,) = [t for t in service.tasks() if t["Status"]["State"] == "running"]
    return str(task["Status"]["ContainerStatus"]["ContainerID"])


def alice_answers(plane: ControlPlane) -> requests.Response | None:
    """Alice's server through the floating address, as her browser reaches it."""
    url = f"http://{plane.net.reachable(FLOATING_ADDRESS)}:{plane.config.nginx.public_port}"
    token = plane.client().config.token.reveal()  # the operator's
    try:
        return requests.get(f"{url}/user/alice/api/status", timeout=2,
                            headers={"Authorization": f"token {token}"})  # fmt: skip
    except requests.RequestException:
        return None


def serves(plane: ControlPlane, generation: int) -> bool:
    response = alice_answers(plane)
    return (
        response is not None
        and response.status_code == 200
        and response.headers.get("X-Hubkeeper-Generation") == str(generation)
    )


def freeze(plane: ControlPlane, name: str, signum: signal.Signals) -> None:
    for pid in plane.net.pids(host(name)):
        os.kill(pid, signum)


def test_hub_host_lost_while_the_leading_watcher_is_frozen_mid_failover(
    plane: ControlPlane, alice: str
) -> None:
    census = DatabaseCensus(plane.postgres)
    census.start()
    leader = plane.leader()
    assert leader is not None
    (standby,) = set(WATCHERS) - {leader}
    old_generation = plane.watcher_status(leader)["leadership"]["generation"]  # type: ignore[index]
    assert serves(plane, 1)

    plane.net.kill(host("huba"))  # hub a's host dies: power off, then its cable
    plane.net.cut(host("huba"))
    wait_for(lambda: plane.saved_state().get("step") is not None, 30, "a failover", 0.01)
    freeze(plane, leader, signal.SIGSTOP)  # every process on the leader's host
    frozen_in = plane.saved_state()["step"]["phase"]
    try:
        wait_for(lambda: plane.saved_state()["active"] == "b", 60, "the failover to hub b")
        wait_for(lambda: serves(plane, 2), 30, "alice through the floating address, via b")
    finally:
        freeze(plane, leader, signal.SIGCONT)
    taken = plane.watcher_status(standby)["leadership"]  # type: ignore[index]
    assert taken["leading"] and taken["generation"] > old_generation
    assert running_task(plane) == alice  # the same server, adopted across hosts
    for name in NGINX_HOSTS:  # both NGINX hosts at one generation, the new leader's token
        assert plane.agent_get(name, "/v1/nginx") == {
            "nginx": ["b", 2],
            "token": taken["generation"],
        }
    late = plane.agent_post("nginx1", "/v1/nginx/rollback", token=old_generation)
    assert late.status_code == 409

    time.sleep(2 * plane.lease_ttl)  # the thawed former leader finds its lease gone
    assert not plane.watcher_status(leader)["leadership"]["leading"]  # type: ignore[index]
    assert plane.saved_state()["active"] == "b" and serves(plane, 2)
    census.stop()
    assert census.failure is None and census.samples > 50
    assert census.most == 1, f"two hubs were on the database at once: {census.seen}"
    print(
        f"leader {leader} frozen in {frozen_in!r}; {standby} took generation {taken['generation']}"
    )


def test_the_nginx_host_holding_the_floating_address_dies(plane: ControlPlane, alice: str) -> None:
    holder = plane.floating_holder()
    assert holder is not None
    (other,) = set(NGINX_HOSTS) - {holder}
    generation = plane.saved_state()["generation"]
    assert serves(plane, generation)
    died = time.monotonic()
    plane.net.kill(host(holder))
    plane.net.cut(host(holder))
    moved = lambda: plane.net.holds(host(other), FLOATING_ADDRESS)  # noqa: E731
    wait_for(moved, 20, "the floating address to move")  # the dead host keeps it configured
    wait_for(lambda: serves(plane, generation), 20, "alice through the floating address")
    print(f"served again {time.monotonic() - died:.2f} s after {holder} died")
    assert running_task(plane) == alice


def test_postgresql_stopped_is_no_failover_storm_and_pages(plane: ControlPlane) -> None:
    active, generation = plane.saved_state()["active"], plane.saved_state()["generation"]
    plane.postgres.stop()
    wait_for(
        lambda: (
            "HubkeeperWatcherLeaseStoreUnreachable"
            in {a["labels"]["alertname"] for a in plane.firing_alerts()}
        ),
        30,
        "the page about the lease database",
    )
    time.sleep(3 * plane.lease_ttl)  # room for a failover storm, if there were one
    url = f"http://{FLOATING_ADDRESS}:{plane.config.nginx.public_port}/nginx-generation"
    served = requests.get(url, timeout=5).headers.get("X-Hubkeeper-Generation")
    assert served == str(generation)
    assert hubctl.launched_pid(plane.config, active) is not None  # nothing was fenced
    assert all(plane.leader() is None for _ in range(3))
