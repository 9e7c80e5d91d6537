"""Both hub instances of the local stack on a real PostgreSQL (a throwaway cluster of Debian's
server), the watcher failing over between them, and a census of who is on the database."""

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubkeeper.deploy import hubctl
from hubkeeper.deploy.postgres import Postgres
from hubkeeper.deploy.stack import Stack, running_stack, wait_for
from tests.integration.helpers import server_status, start_and_wait, user_containers

WATCHER = {"startup_grace": 1.0, "hold_time": 600.0}


class DatabaseCensus(threading.Thread):
    """Every 50 ms, which hub instances have a connection to the database (by their
    ``application_name``, ``jupyterhub-<instance>``), on a connection of its own."""

    def __init__(self, postgres: Postgres) -> None:
        super().__init__(daemon=True)
        self.postgres = postgres
        self.samples = 0
        self.seen: list[set[str]] = []  # each change of who is connected
        self.most = 0
        self.failure: Exception | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        try:
            with self.postgres.admin() as connection:
                while not self.halt.wait(0.05):
                    rows = connection.execute(
                        "SELECT DISTINCT application_name FROM pg_stat_activity"
                        " WHERE application_name LIKE 'jupyterhub-%'"
                    ).fetchall()
                    hubs = {name.removeprefix("jupyterhub-") for (name,) in rows}
                    self.samples += 1
                    self.most = max(self.most, len(hubs))
                    if not self.seen or self.seen[-1] != hubs:
                        self.seen.append(hubs)
        except Exception as exc:  # reported by the test, not lost in a thread
            self.failure = exc

    def stop(self) -> None:
        self.halt.set()
        self.join(5)


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
    """The stack with the watcher (hub b a warm standby), started once the census runs."""
    database = {"database_url": postgres.url, "database_password_file": str(postgres.password_file)}
    with running_stack(
        tmp_path / "stack", hub_name="pg-failover", watcher=WATCHER,
        overrides={"jupyterhub": database},
    ) as running:  # fmt: skip
        yield running


def active(stack: Stack) -> str:
    return json.loads(Path(stack.config.watcher.state_file).read_text())["active"]


def test_hubs_on_postgresql_fail_over_and_are_never_on_the_database_together(
    stack: Stack, postgres: Postgres, census: DatabaseCensus
) -> None:
    client = stack.client()
    client.create_users(["alice"])
    start_and_wait(client, "alice")
    (container,) = user_containers(stack, "alice")
    assert census.seen[-1] == {"a"}, census.seen  # the warm standby b is not on it

    hub_a = hubctl.launched_pid(stack.config, "a")
    assert hub_a is not None
    os.killpg(hub_a, signal.SIGKILL)
    wait_for(lambda: active(stack) == "b", 60, "the failover to hub b")
    wait_for(lambda: server_status(stack, "alice").status_code == 200, 30, "alice via hub b")
    response = server_status(stack, "alice")
    assert response.headers["X-Hubkeeper-Generation"] == "2"  # NGINX sends users to b
    assert [c.id for c in user_containers(stack, "alice")] == [container.id]
    assert client.user("alice")["servers"][""]["ready"]  # hub b knows her server

    census.stop()
    assert census.failure is None, census.failure
    assert census.samples > 100
    assert census.most == 1, f"two hubs were on the database at once: {census.seen}"
    assert {"a"} in census.seen and census.seen[-1] == {"b"}, census.seen
    password = postgres.password_file.read_text().strip()
    for log in stack.logs.glob("*.log"):
        assert password not in log.read_text(errors="replace"), f"{log.name} shows the password"
