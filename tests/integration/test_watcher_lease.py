"""Two hub watchers sharing a lease in a real PostgreSQL (the hubs' own database server),
acting through a real ``hubkeeper agent`` with fencing tokens, on the local stack's real
hubs, user containers and NGINX.

The watchers run on one machine here; what crosses hosts (agents, the lease) goes over TCP
as it would between hosts."""

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from hubkeeper.deploy import hubctl
from hubkeeper.deploy.postgres import Postgres
from hubkeeper.deploy.stack import ManagedProcess, Stack, free_ports, running_stack, wait_for
from tests.integration.helpers import server_status, start_and_wait, user_containers
from tests.integration.test_postgres import DatabaseCensus

LEASE_TTL = 2.0


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[Postgres]:
    with Postgres(tmp_path / "postgres") as cluster:
        yield cluster


@pytest.fixture
def census(postgres: Postgres) -> Iterator[DatabaseCensus]:
    census = DatabaseCensus(postgres)
    census.start()
    yield census
    census.stop()


@pytest.fixture
def stack(tmp_path: Path, postgres: Postgres, census: DatabaseCensus) -> Iterator[Stack]:
    database = {"database_url": postgres.url, "database_password_file": str(postgres.password_file)}
    lease = {
        "lease_database_url": postgres.url,
        "lease_password_file": str(postgres.password_file),
        "lease_ttl": LEASE_TTL,
    }
    with running_stack(
        tmp_path / "stack", hub_name="lease", watcher={"startup_grace": 1.0, "hold_time": 600.0},
        overrides={"jupyterhub": database}, lease=lease,
    ) as running:  # fmt: skip
        yield running


@pytest.fixture
def second_watcher(stack: Stack) -> Iterator[tuple[ManagedProcess, int]]:
    """Another watcher with its own endpoint: as a watcher on a second host would be."""
    (port,) = free_ports(1)
    sections = stack.config_sections()
    path = stack.node_config(
        "watcher2", {"watcher": {**sections["watcher"], "endpoint": {"port": port}}}
    )
    process = stack.spawn("watcher2", stack.hubkeeper_argv("watch-hubs", path))
    stack.until_ready(process, f"http://127.0.0.1:{port}/healthz", 60)
    yield process, port
    os.kill(process.pid, signal.SIGCONT)  # a test may leave it stopped


def leadership(port: int) -> dict:
    return requests.get(f"http://127.0.0.1:{port}/status", timeout=5).json()["leadership"]


def saved_state(postgres: Postgres) -> dict:
    with postgres.admin("jupyterhub") as connection:
        (state,) = connection.execute("SELECT state FROM hubkeeper_watcher_state").fetchone()
    return state


def agent(stack: Stack, path: str, document: dict | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {stack.config.agent.endpoint.token.reveal()}"}
    url = stack.agent_url + path
    if document is None:
        return requests.get(url, headers=headers, timeout=10)
    return requests.post(url, json=document, headers=headers, timeout=10)


def test_a_leader_paused_mid_failover_is_replaced_and_its_late_actions_refused(
    stack: Stack, second_watcher: tuple[ManagedProcess, int], postgres: Postgres,
    census: DatabaseCensus,
) -> None:  # fmt: skip
    watchers = {stack.watcher_process.pid: stack.config.watcher.endpoint.port}
    watchers[second_watcher[0].pid] = second_watcher[1]
    wait_for(lambda: sum(leadership(p)["leading"] for p in watchers.values()) == 1, 30, "a leader")
    (leader,) = [pid for pid, port in watchers.items() if leadership(port)["leading"]]
    (standby,) = set(watchers) - {leader}
    old_generation = leadership(watchers[leader])["generation"]
    client = stack.client()
    client.create_users(["alice"])
    start_and_wait(client, "alice")
    (container,) = user_containers(stack, "alice")

    os.killpg(hubctl.launched_pid(stack.config, "a"), signal.SIGKILL)
    wait_for(lambda: saved_state(postgres)["step"] is not None, 30, "a failover to start", 0.01)
    os.kill(leader, signal.SIGSTOP)  # the whole process, mid-failover
    paused_in = saved_state(postgres)["step"]["phase"]

    wait_for(lambda: saved_state(postgres)["active"] == "b", 60, "the other watcher's failover")
    taken = leadership(watchers[standby])
    assert taken["leading"] and taken["generation"] > old_generation
    wait_for(lambda: server_status(stack, "alice").status_code == 200, 30, "alice via hub b")
    assert server_status(stack, "alice").headers["X-Hubkeeper-Generation"] == "2"
    assert [c.id for c in user_containers(stack, "alice")] == [container.id]
    # every host's agent was told the new token first: the old one is refused there
    assert agent(stack, "/v1/nginx").json() == {"nginx": ["b", 2], "token": taken["generation"]}
    stale = agent(stack, "/v1/nginx/switch", {"token": old_generation, "hub": "a", "generation": 3})
    assert stale.status_code == 409 and "older than" in stale.json()["error"]

    os.kill(leader, signal.SIGCONT)  # it wakes up in the middle of its failover
    time.sleep(2 * LEASE_TTL)
    assert not leadership(watchers[leader])["leading"]
    assert agent(stack, "/v1/nginx").json()["nginx"] == ["b", 2]
    assert saved_state(postgres)["active"] == "b" and saved_state(postgres)["step"] is None
    assert hubctl.launched_pid(stack.config, "b") is not None
    assert hubctl.launched_pid(stack.config, "a") is None  # a is a warm standby again
    census.stop()
    assert census.failure is None and census.samples > 100
    assert census.most == 1, f"two hubs were on the database at once: {census.seen}"
    print(f"paused in {paused_in!r}; generation {old_generation} -> {taken['generation']}")


def test_postgresql_stopped_is_no_failover_and_pages_on_call(
    stack: Stack, second_watcher: tuple[ManagedProcess, int], postgres: Postgres
) -> None:
    ports = [stack.config.watcher.endpoint.port, second_watcher[1]]
    wait_for(lambda: any(leadership(port)["leading"] for port in ports), 30, "a leader")
    postgres.stop()
    wait_for(
        lambda: (
            "HubkeeperWatcherLeaseStoreUnreachable"
            in {a["labels"]["alertname"] for a in stack.firing_alerts()}
        ),
        30,
        "the page about the lease database",
    )
    time.sleep(3 * LEASE_TTL)  # time for a failover storm, if there were to be one
    assert agent(stack, "/v1/nginx").json()["nginx"] == ["a", 1]
    assert hubctl.launched_pid(stack.config, "a") is not None
    assert hubctl.launched_pid(stack.config, "b") is None
    assert not any(leadership(port)["leading"] for port in ports)
    names = {a["labels"]["alertname"] for a in stack.firing_alerts()}
    assert "HubkeeperFailover" not in names
