"""``hubkeeper export-containers`` against the real Docker engine, real containers and hub.

Containers come from the local base image through testcontainers (host networking, Ryuk
off: its image cannot be pulled here). Each test runs the exporter as its own process and
reads /metrics and the PRTG sensors over HTTP, every PRTG answer through the strict checker.
"""

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import docker  # noqa: E402
import pytest  # noqa: E402
import requests  # noqa: E402
from testcontainers.core.config import testcontainers_config  # noqa: E402
from testcontainers.core.container import DockerContainer  # noqa: E402

from hubkeeper import prtg  # noqa: E402
from hubkeeper.deploy.stack import Stack, free_ports, to_toml, wait_for  # noqa: E402
from hubkeeper.hub.images import BASE_IMAGE  # noqa: E402
from tests.integration.helpers import series, start_and_wait, user_containers  # noqa: E402

testcontainers_config.ryuk_disabled = True
ROOT = Path(__file__).resolve().parents[2]
MiB = 2**20
HOG = "import time; x = bytearray(100 * 2**20); x[::4096] = b'x' * len(x[::4096]); time.sleep(600)"
BURN = "while True: pass"


@dataclass
class Exporter:
    """A running ``hubkeeper export-containers`` process."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    token: str | None = None

    def get(self, path: str, auth: bool = True) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if auth and self.token else {}
        return requests.get(self.url + path, headers=headers, timeout=30)

    def metrics(self) -> str:
        response = self.get("/metrics")
        assert response.status_code == 200, response.text
        return response.text

    def sensor(self, path: str) -> dict:
        response = self.get(path)
        assert response.status_code == 200  # PRTG's error form too is HTTP 200
        assert response.headers["Content-Type"].startswith("application/json")
        payload = response.json()
        assert prtg.check(payload) == [], payload
        return payload

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]


def channels(payload: dict) -> dict[str, float]:
    return {c["channel"]: c["value"] for c in payload["prtg"]["result"]}


@contextlib.contextmanager
def running_exporter(config_dir: Path, data: dict, name: str = "exporter") -> Iterator[Exporter]:
    port = free_ports(1)[0]
    containers = data.setdefault("containers", {})
    containers.setdefault("endpoint", {})["port"] = port
    config = config_dir / f"{name}-{port}.toml"
    config.write_text(to_toml({"logging": {"level": "debug"}, **data}))
    log = config_dir / f"{name}-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "hubkeeper.cli", "export-containers", "--config", str(config)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    token = None
    token_file = containers["endpoint"].get("token_file")
    if token_file:
        token = (config_dir / token_file).read_text().strip()
    exporter = Exporter(url, process, log, token)
    try:
        wait_for(lambda: _answers(url) or process.poll() is not None, 30, "the exporter")
        assert process.poll() is None, log.read_text()
        yield exporter
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                code = process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
                raise AssertionError("the exporter did not stop within 10 s of SIGTERM") from None
            assert code == 0, log.read_text()[-2000:]


def _answers(url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def labels() -> dict[str, str]:
    """A label namespace of this test only: the exporter sees no other test's containers."""
    namespace = f"org.hubkeeper.t{secrets.token_hex(3)}"
    return {key: f"{namespace}.{key}" for key in ("user", "server", "hub", "image")}


@pytest.fixture
def containers(labels: dict[str, str]) -> Iterator[Callable[..., DockerContainer]]:
    """Start labelled containers of the base image; all removed after the test."""
    started: list[DockerContainer] = []

    def start(user: str, command: str, server: str = "", **kwargs: object) -> DockerContainer:
        container = DockerContainer(BASE_IMAGE).with_command(["python3", "-c", command])
        container.with_kwargs(
            network_mode="host",
            labels={
                labels["user"]: user,
                labels["server"]: server,
                labels["hub"]: "lab",
                labels["image"]: BASE_IMAGE,
            },
            **kwargs,
        )
        started.append(container.start())
        return container

    yield start
    for container in started:
        with contextlib.suppress(docker.errors.NotFound):
            container.stop()


def docker_stats(container: DockerContainer) -> dict:
    return container.get_wrapped_container().stats(stream=False, one_shot=True)


def docker_memory(container: DockerContainer) -> tuple[int, int]:
    """(working set, limit) from the Docker stats API, computed as `docker stats` does."""
    memory = docker_stats(container)["memory_stats"]
    inactive = memory["stats"].get("total_inactive_file", memory["stats"].get("inactive_file", 0))
    return memory["usage"] - inactive, memory["limit"]


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a host process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def docker_cpu(container: DockerContainer) -> float:
    return docker_stats(container)["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9


WS = "container_memory_working_set_bytes"


def name_of(container: DockerContainer) -> str:
    return container.get_wrapped_container().name


def cpu_reading(exporter: Exporter, container: DockerContainer) -> tuple[float, float]:
    """(CPU seconds, when they were read) of a container, from one scrape."""
    text, label = exporter.metrics(), f"/docker/{container.get_wrapped_container().id}"
    (cpu,) = series(text, "container_cpu_usage_seconds_total", id=label)
    (seen,) = series(text, "container_last_seen", id=label)
    return cpu, seen


@pytest.mark.parametrize("source", ["cgroup", "api"])
def test_memory_hog_and_cpu_burner_match_docker(
    source: str, labels: dict, containers: Callable, tmp_path: Path
) -> None:
    hog = containers("hog", HOG, mem_limit="256m")
    burner = containers("burner", BURN, server="busy")
    data = {"labels": labels, "containers": {"source": source, "cache_seconds": 0}}
    with running_exporter(tmp_path, data) as exporter:

        def hog_resident() -> bool:
            return any(v > 95 * MiB for v in series(exporter.metrics(), WS, name=name_of(hog)))

        wait_for(hog_resident, 30, "the hog's 100 MiB")
        text = exporter.metrics()
        assert series(text, "hubkeeper_containers_seen", source=source) == [2.0]
        hog_labels = {"jupyterhub_user": "hog", "jupyterhub_server": "", "hub": "lab"}
        (working_set,) = series(text, WS, name=name_of(hog), image=BASE_IMAGE, **hog_labels)
        (limit,) = series(text, "container_spec_memory_limit_bytes", name=name_of(hog))
        docker_working_set, docker_limit = docker_memory(hog)
        assert working_set == pytest.approx(docker_working_set, rel=0.10)
        assert limit == docker_limit == 256 * MiB
        assert series(text, "container_memory_rss", name=name_of(hog))[0] > 95 * MiB

        # The burner is the container's only process: the cgroup's CPU counter must match
        # what the kernel accounted to the process (/proc/<pid>/stat), read just before and
        # after the scrape. (Wall-clock rates vary: two CPUs, shared with other tests.)
        wrapped = burner.get_wrapped_container()
        wrapped.reload()
        pid = wrapped.attrs["State"]["Pid"]
        readings = []
        for delay in (0, 4):
            time.sleep(delay)
            before = process_cpu(pid)
            cpu, seen = cpu_reading(exporter, burner)
            assert before - 0.05 <= cpu <= process_cpu(pid) + 0.05
            readings.append((cpu, seen))
        (cpu_0, seen_0), (cpu_1, seen_1) = readings
        assert 0.2 < (cpu_1 - cpu_0) / (seen_1 - seen_0) < 1.05  # about a CPU, as it gets one
        # the same counter as Docker's: its reading lies between two of ours
        before, docker, after = (
            cpu_reading(exporter, burner)[0],
            docker_cpu(burner),
            cpu_reading(exporter, burner)[0],
        )
        assert before <= docker <= after
        text = exporter.metrics()
        (user,) = series(text, "container_cpu_user_seconds_total", jupyterhub_user="burner")
        (system,) = series(text, "container_cpu_system_seconds_total", jupyterhub_user="burner")
        (total,) = series(text, "container_cpu_usage_seconds_total", jupyterhub_user="burner")
        assert user + system == pytest.approx(total, rel=0.1)

        server = channels(exporter.sensor("/prtg/servers/burner/busy"))
        assert 10 < server["CPU"] <= 105  # percent of one core, over the last 5 s or more
        hog_sensor = channels(exporter.sensor("/prtg/servers/hog"))
        assert hog_sensor["Memory of limit"] == pytest.approx(100 * working_set / limit, abs=5)
        overview = exporter.sensor("/prtg/overview")
        assert channels(overview)["Running servers"] == 2
        assert "top memory: hog " in overview["prtg"]["text"]


def test_started_container_appears_and_removed_one_vanishes_at_the_next_scrape(
    labels: dict, containers: Callable, tmp_path: Path
) -> None:
    keep = containers("keep", "import time; time.sleep(600)")
    data = {"labels": labels, "containers": {"cache_seconds": 0, "resync_seconds": 300}}
    with running_exporter(tmp_path, data) as exporter:
        gone = containers("gone", "import time; time.sleep(600)")  # seen through events
        wait_for(lambda: bool(series(exporter.metrics(), WS, jupyterhub_user="gone")), 10, "gone")
        text = exporter.metrics()
        assert series(text, WS, jupyterhub_user="gone") and series(text, WS, jupyterhub_user="keep")
        assert "error" not in exporter.sensor("/prtg/servers/gone")["prtg"]
        gone.stop()  # docker rm -f
        text = exporter.metrics()  # the very next scrape
        assert not any('jupyterhub_user="gone"' in line for line in text.splitlines())
        assert series(text, WS, jupyterhub_user="keep")
        assert exporter.sensor("/prtg/servers/gone")["prtg"] == {
            "error": 1,
            "text": "no running container for server 'gone'",
        }
        assert name_of(keep) in exporter.metrics()


def test_unreachable_docker_engine(labels: dict, tmp_path: Path) -> None:
    (tmp_path / "endpoint.token").write_text(secrets.token_hex(16))
    socket = f"unix://{tmp_path}/no-engine/docker.sock"  # nothing answers here
    data = {
        "labels": labels,
        "containers": {"docker_url": socket, "endpoint": {"token_file": "endpoint.token"}},
    }
    with running_exporter(tmp_path, data) as exporter:
        assert exporter.get("/metrics", auth=False).status_code == 401
        assert exporter.get("/prtg/overview", auth=False).status_code == 401
        text = exporter.metrics()
        assert series(text, "hubkeeper_containers_docker_up") == [0.0]
        assert series(text, "hubkeeper_containers_seen", source="cgroup") == [0.0]
        for path in ("/prtg/overview", "/prtg/servers/alice"):
            payload = exporter.sensor(path)
            assert payload["prtg"]["error"] == 1
            assert payload["prtg"]["text"].startswith(f"Docker engine unreachable at {socket}: ")
        health = exporter.get("/healthz", auth=False)
        assert health.status_code == 200 and "Docker engine unreachable" in health.text
        assert any(e["event"] == "docker_engine_unreachable" for e in exporter.events())
        assert exporter.token not in exporter.log.read_text()


def test_reconciliation_with_the_real_hub(stack: Stack) -> None:
    """A real user server (user "a-b", container jupyter-a-2db) and an orphan container."""
    config = stack.config
    user, ghost = f"a-b{secrets.token_hex(2)}", f"ghost-{secrets.token_hex(2)}"
    client = stack.client()
    client.create_users([user])
    start_and_wait(client, user)
    (server_container,) = user_containers(stack, user)
    assert (
        server_container.name == f"jupyter-{user.replace('-', '-2d')}"
    )  # escaped by DockerSpawner
    orphan = (
        DockerContainer(BASE_IMAGE)
        .with_command(["sleep", "600"])
        .with_kwargs(
            network_mode="host",
            labels={
                config.labels.user: ghost,
                config.labels.server: "",
                config.labels.hub: config.jupyterhub.name,
            },
        )
    )
    orphan.start()
    data = {
        "containers": {
            "hub_token_file": "secrets/services/hubkeeper-containers.token",
            "reconcile_seconds": 1.0,
            "resync_seconds": 2.0,
            "orphan_grace": 0.0,
            "cache_seconds": 0,
        }
    }
    try:
        with running_exporter(stack.workdir, _stack_config(stack, data), "containers") as exporter:

            def reconciled() -> bool:
                text = exporter.metrics()
                return series(text, "hubkeeper_containers_orphans") == [1.0] and series(
                    text, "hubkeeper_containers_missing"
                ) == [0.0]

            wait_for(reconciled, 30, "the orphan to be reported")
            text = exporter.metrics()
            assert series(text, "hubkeeper_containers_hub_up") == [1.0]
            assert series(text, WS, jupyterhub_user=user, name=server_container.name)
            assert series(text, WS, jupyterhub_user=ghost)
            overview = exporter.sensor("/prtg/overview")
            assert f"orphans: {ghost} (" in overview["prtg"]["text"]
            assert "missing: none" in overview["prtg"]["text"]
            assert channels(overview)["Orphan containers"] == 1
            assert "error" not in exporter.sensor(f"/prtg/servers/{user}")["prtg"]
            logged = [e for e in exporter.events() if e["event"] == "reconciliation"]
            assert any(e["orphans"] and e["orphans"][0].startswith(ghost) for e in logged)

            # The user's container disappears behind the hub's back: reported missing until
            # the hub's own poll notices (every 30 s), so retry if the hub was quicker.
            assert _reported_missing(stack, exporter, user), "missing server never reported"
    finally:
        orphan.stop()
        with contextlib.suppress(Exception):
            client.stop_server(user)


def _stack_config(stack: Stack, data: dict) -> dict:
    """The stack's own config plus ``data``, as a dict for running_exporter."""
    return {**tomllib.loads(stack.config_path.read_text()), **data}


def _reported_missing(stack: Stack, exporter: Exporter, user: str) -> bool:
    client = stack.client()
    for _attempt in range(3):
        if "" not in client.user(user)["servers"]:
            start_and_wait(client, user)
        (container,) = user_containers(stack, user)
        container.remove(force=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            overview = exporter.sensor("/prtg/overview")
            if f"missing: {user}" in overview["prtg"]["text"]:
                assert channels(overview)["Missing servers"] == 1
                assert series(exporter.metrics(), "hubkeeper_containers_missing") == [1.0]
                return True
            if "" not in client.user(user)["servers"]:
                break  # the hub noticed first; try again
            time.sleep(0.3)
    return False
