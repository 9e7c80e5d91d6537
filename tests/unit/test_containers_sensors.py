"""The exporter's PRTG sensors, all run through the strict format checker."""

import dataclasses

import pytest

from hubkeeper import prtg
from hubkeeper.watchers.containers.model import ContainerInfo, Sample, Snapshot, Stats
from hubkeeper.watchers.containers.reconcile import MissingServer, Orphan, Reconciliation
from hubkeeper.watchers.containers.sensors import (
    MAX_TOP,
    SensorSettings,
    cluster_overview,
    overview,
    parse_server_path,
    server_memory,
    server_sensor,
)
from hubkeeper.watchers.containers.swarm import SwarmNode

SETTINGS = SensorSettings(top=3, docker_url="unix:///var/run/docker.sock", hub="lab")
MiB = 2**20


def sample(user: str, memory_mib: int, cpu: float, server: str = "", hub: str = "lab") -> Sample:
    info = ContainerInfo(
        id=f"{user}-{server}-{hub}", name=f"jupyter-{user}", image="img", user=user,
        server=server, hub=hub, started_at=1000.0, memory_limit=512 * MiB, cpu_quota=100000,
        cpu_period=100000,
    )  # fmt: skip
    stats = Stats(
        cpu_seconds=10.0, memory_usage=memory_mib * MiB, memory_working_set=memory_mib * MiB,
        memory_limit=512 * MiB, memory_rss=memory_mib * MiB, memory_cache=0, oom_kills=0,
        processes=2, threads=9,
    )  # fmt: skip
    return Sample(info, stats, 4600.0, "cgroup", f"/docker/{info.id}", user, server, cpu, 0.1)


SNAPSHOT = Snapshot(
    time=4600.0,
    duration=0.012,
    docker_up=True,
    docker_error="",
    samples=(sample("alice", 100, 0.5), sample("bob", 300, 0.1), sample("carol", 200, 0.9)),
)
RECONCILED = Reconciliation(
    time=4590.0,
    hub_up=True,
    hub_servers=3,
    orphans=(Orphan("ghost", "", "jupyter-ghost"),),
    missing=(MissingServer("dave", "gpu"),),
)


def channels(payload: dict) -> dict[str, dict]:
    return {c["channel"]: c for c in payload["prtg"]["result"]}


def test_overview() -> None:
    payload = overview(SNAPSHOT, RECONCILED, SETTINGS)
    assert prtg.check(payload) == []
    by_name = channels(payload)
    assert by_name["Running servers"]["value"] == 3
    assert by_name["Orphan containers"]["value"] == 1
    assert by_name["Orphan containers"]["limitmaxwarning"] == 0
    assert by_name["Missing servers"]["value"] == 1
    assert by_name["Hub servers"]["value"] == 3
    assert by_name["CPU total"]["value"] == 150.0
    assert by_name["Memory total"]["value"] == 600 * MiB
    assert [by_name[f"Memory top {i}"]["value"] for i in (1, 2, 3)] == [
        300 * MiB,
        200 * MiB,
        100 * MiB,
    ]
    assert [by_name[f"CPU top {i}"]["value"] for i in (1, 2, 3)] == [90.0, 50.0, 10.0]
    assert (
        by_name["Scrape time"]["value"] == 12.0 and by_name["Scrape time"]["unit"] == "TimeResponse"
    )
    text = payload["prtg"]["text"]
    assert "orphans: ghost (jupyter-ghost)" in text
    assert "missing: dave/gpu" in text
    assert "top memory: bob 300 MiB, carol 200 MiB, alice 100 MiB" in text


def test_overview_at_most_50_channels_and_stable_names() -> None:
    payload = overview(SNAPSHOT, RECONCILED, dataclasses.replace(SETTINGS, top=MAX_TOP))
    assert prtg.check(payload) == []
    assert len(payload["prtg"]["result"]) <= 50
    assert channels(payload)["Memory top 20"]["value"] == 0  # fewer servers than ranks


def test_overview_hub_unreachable_and_reconciliation_off() -> None:
    down = Reconciliation(time=1.0, hub_up=False, error="GET /users: no response")
    payload = overview(SNAPSHOT, down, SETTINGS)
    assert prtg.check(payload) == []
    assert channels(payload)["Hub API up"] == {
        "channel": "Hub API up", "unit": "Count", "value": 0, "limitminwarning": 1,
        "limitmode": 1,
    }  # fmt: skip
    assert "Orphan containers" not in channels(payload)
    assert "hub API unreachable: GET /users: no response" in payload["prtg"]["text"]
    assert "Hub API up" not in channels(overview(SNAPSHOT, None, SETTINGS))


def test_docker_down_is_prtgs_error_form() -> None:
    down = dataclasses.replace(SNAPSHOT, docker_up=False, docker_error="ConnectionError: refused")
    for payload in (
        overview(down, RECONCILED, SETTINGS),
        server_sensor(down, "alice", "", SETTINGS),
    ):
        assert prtg.check(payload) == []
        assert payload["prtg"]["error"] == 1
        assert payload["prtg"]["text"] == (
            "Docker engine unreachable at unix:///var/run/docker.sock: ConnectionError: refused"
        )


def test_server_sensor() -> None:
    payload = server_sensor(SNAPSHOT, "bob", "", SETTINGS)
    assert prtg.check(payload) == []
    by_name = channels(payload)
    assert by_name["Memory"]["value"] == 300 * MiB
    assert by_name["Memory of limit"]["value"] == pytest.approx(58.59, abs=0.01)
    assert (
        by_name["Memory of limit"]["limitmaxwarning"],
        by_name["Memory of limit"]["limitmaxerror"],
    ) == (80.0, 95.0)
    assert by_name["CPU"]["value"] == 10.0
    assert by_name["CPU of limit"]["value"] == 10.0
    assert by_name["CPU throttled"]["value"] == 10.0
    assert by_name["OOM kills"]["mode"] == "Difference"
    assert by_name["Uptime"] == {"channel": "Uptime", "unit": "TimeSeconds", "value": 3600}
    assert payload["prtg"]["text"].startswith("bob: container jupyter-bob (img)")


def test_named_server_and_the_deployments_hub_first() -> None:
    snapshot = dataclasses.replace(
        SNAPSHOT,
        samples=(sample("alice", 50, 0.0, "gpu", hub="other"), sample("alice", 70, 0.0, "gpu")),
    )
    payload = server_sensor(snapshot, "alice", "gpu", SETTINGS)
    assert channels(payload)["Memory"]["value"] == 70 * MiB
    missing = server_sensor(snapshot, "alice", "", SETTINGS)
    assert prtg.check(missing) == []
    assert missing["prtg"] == {"error": 1, "text": "no running container for server 'alice'"}


def test_server_paths() -> None:
    assert parse_server_path("/prtg/servers/alice") == ("alice", "")
    assert parse_server_path("/prtg/servers/a-b/my%20gpu") == ("a-b", "my gpu")
    assert parse_server_path("/prtg/servers/x%2Fy") == ("x/y", "")
    assert parse_server_path("/prtg/servers/") is None
    assert parse_server_path("/prtg/servers/a/b/c") is None


def test_cluster_overview_names_nodes_down_missing_orphans_and_top_users_across_nodes() -> None:
    nodes = (SwarmNode("hk-node1", "192.0.2.12", "manager", True),
             SwarmNode("hk-node2", "192.0.2.13", "worker", False),
             SwarmNode("hk-node3", "192.0.2.14", "worker", True))  # fmt: skip
    books = Reconciliation(
        time=1.0, hub_up=True, hub_servers=3, orphans=(Orphan("ghost", "", "jupyter-ghost"),),
        missing=(MissingServer("alice", "", "hk-node2"),), nodes=nodes,
        servers_on={"hk-node2": 1, "hk-node3": 2},
    )  # fmt: skip
    metrics = "\n".join([
        'container_memory_working_set_bytes{name="a",hub="lab",jupyterhub_user="bob"} 314572800',
        'container_memory_working_set_bytes{name="b",hub="lab",jupyterhub_user="carol",'
        'jupyterhub_server="gpu"} 104857600',
        'container_memory_working_set_bytes{name="c",hub="other",jupyterhub_user="eve"} 1e12',
        "",
    ])  # fmt: skip
    memory = server_memory(metrics, "lab", "hk-node3")
    assert memory == [("bob", "hk-node3", 300 * MiB), ("carol/gpu", "hk-node3", 100 * MiB)]
    payload = cluster_overview(books, memory, ["hk-node1"], dataclasses.replace(SETTINGS, top=2))
    assert prtg.check(payload) == []
    by_name = channels(payload)
    assert by_name["Nodes down"]["value"] == 1 and by_name["Nodes down"]["limitmaxerror"] == 0
    assert [by_name[f"Servers on hk-node{i}"]["value"] for i in (1, 2, 3)] == [0, 1, 2]
    assert (by_name["Servers"]["value"], by_name["Missing servers"]["value"]) == (3, 1)
    assert by_name["Memory top 1"]["value"] == 300 * MiB
    text = payload["prtg"]["text"]
    assert "2 of 3 nodes up; down: hk-node2; missing: alice (node hk-node2 down)" in text
    assert "top memory: bob on hk-node3 300 MiB, carol/gpu on hk-node3 100 MiB" in text
    assert "no figures from the exporters of hk-node1" in text
    unknown = cluster_overview(None, [], [], SETTINGS)
    assert unknown["prtg"]["error"] == 1
