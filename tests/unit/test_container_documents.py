"""The container exporter's snapshot documents, and their fields in the index template."""

from typing import Any

from hubkeeper.config import ShipperElasticsearchConfig
from hubkeeper.shippers.elasticsearch import templates
from hubkeeper.shippers.parsers import iso_from_epoch
from hubkeeper.watchers.containers.documents import container_figures, snapshot_documents
from hubkeeper.watchers.containers.model import ContainerInfo, Sample, Snapshot, Stats
from hubkeeper.watchers.containers.reconcile import Orphan, Reconciliation

MIB = 1024**2
T = 1_795_600_800.25


def info(
    cid: str = "c1",
    name: str = "jupyter-alice",
    hub: str = "main",
    memory_limit: int = 512 * MIB,
    cpu_quota: int = 50_000,
    cpu_period: int = 100_000,
) -> ContainerInfo:
    return ContainerInfo(
        id=cid, name=name, image="jupyter/base:1", user=name.removeprefix("jupyter-"),
        server="", hub=hub, memory_limit=memory_limit, cpu_quota=cpu_quota,
        cpu_period=cpu_period,
    )  # fmt: skip


def stats(memory_limit: int | None = None, oom_kills: int | None = 2) -> Stats:
    return Stats(
        cpu_seconds=12.5, memory_usage=300 * MIB, memory_working_set=128 * MIB,
        memory_limit=memory_limit, oom_kills=oom_kills, processes=7,
    )  # fmt: skip


def sample(
    container: ContainerInfo | None = None,
    reading: Stats | None = None,
    cpu_rate: float | None = 0.25,
    throttled_ratio: float | None = 0.1,
) -> Sample:
    container = container or info()
    return Sample(
        container, reading or stats(), T, "cgroup", f"/docker/{container.id}",
        container.user, container.server, cpu_rate, throttled_ratio,
    )  # fmt: skip


def test_figures_against_the_limits() -> None:
    assert container_figures(sample()) == {
        "hubkeeper.container.memory.working_set.bytes": 128 * MIB,
        "hubkeeper.container.memory.usage.bytes": 300 * MIB,
        "hubkeeper.container.memory.oom_kills": 2,
        "hubkeeper.container.processes": 7,
        "hubkeeper.container.cpu.cores": 0.25,
        "hubkeeper.container.cpu.throttled_ratio": 0.1,
        "hubkeeper.container.memory.limit.bytes": 512 * MIB,
        "hubkeeper.container.memory.pct_of_limit": 25.0,
        "hubkeeper.container.cpu.limit.cores": 0.5,
        "hubkeeper.container.cpu.pct_of_limit": 50.0,
    }


def test_the_cgroup_memory_limit_wins_over_the_configured_one() -> None:
    figures = container_figures(sample(reading=stats(memory_limit=1024 * MIB)))
    assert figures["hubkeeper.container.memory.limit.bytes"] == 1024 * MIB
    assert figures["hubkeeper.container.memory.pct_of_limit"] == 12.5


def test_unknown_figures_are_left_out() -> None:
    figures = container_figures(
        sample(reading=stats(oom_kills=None), cpu_rate=None, throttled_ratio=None)
    )
    assert None not in figures.values()
    for name in ("cpu.cores", "cpu.pct_of_limit", "cpu.throttled_ratio", "memory.oom_kills"):
        assert f"hubkeeper.container.{name}" not in figures
    assert figures["hubkeeper.container.cpu.limit.cores"] == 0.5


def test_no_limits_no_limit_fields() -> None:
    figures = container_figures(sample(info(memory_limit=0, cpu_quota=0, cpu_period=0)))
    assert not [name for name in figures if ".limit." in name or "pct_of_limit" in name]
    assert figures["hubkeeper.container.cpu.cores"] == 0.25


# --- snapshot documents ------------------------------------------------------------------

SAMPLES = (
    sample(info("c1", "jupyter-alice")),
    sample(info("c2", "jupyter-bob")),
    sample(info("c3", "jupyter-carol", hub="other")),
)
RECONCILED = Reconciliation(
    time=T, hub_up=True, hub_servers=4, orphans=(Orphan("bob", "", "jupyter-bob"),),
    missing=(("dave", ""), ("erin", "gpu")),
)  # fmt: skip


def snapshot(docker_up: bool = True) -> Snapshot:
    return Snapshot(time=T, duration=0.2, docker_up=docker_up, docker_error="", samples=SAMPLES)


def hub_fields(doc: dict[str, Any]) -> set[str]:
    return {name for name in doc if name.startswith("hubkeeper.hub.")}


def test_a_document_per_container_then_the_hub() -> None:
    pairs = snapshot_documents(snapshot(), RECONCILED, "main", "node1")
    assert [identity for identity, _ in pairs] == ["c1", "c2", "c3", "hubkeeper.hub:main"]
    for (identity, doc), each in zip(pairs[:3], SAMPLES, strict=True):
        assert doc["@timestamp"] == iso_from_epoch(T) == "2026-11-25T10:00:00.250Z"
        assert doc["event.dataset"] == "hubkeeper.containers"
        assert doc["user.name"] == each.user
        assert (doc["container.id"], doc["container.name"]) == (identity, each.info.name)
        assert doc["container.image.name"] == "jupyter/base:1"
        assert doc["host.name"] == "node1"
        assert container_figures(each).items() <= doc.items()
    orphan = {doc["container.name"]: doc.get("hubkeeper.container.orphan") for _, doc in pairs[:3]}
    # another hub's container was not compared with this hub: neither orphan nor not
    assert orphan == {"jupyter-alice": False, "jupyter-bob": True, "jupyter-carol": None}


def test_the_hub_state_when_the_hub_answered() -> None:
    _, hub = snapshot_documents(snapshot(), RECONCILED, "main", "node1")[-1]
    assert hub["event.dataset"] == "hubkeeper.hub"
    assert hub["@timestamp"] == iso_from_epoch(T) and hub["labels.hub"] == "main"
    assert hub["hubkeeper.hub.up"] is True and hub["hubkeeper.docker.up"] is True
    assert hub["hubkeeper.hub.containers"] == 2  # c3 belongs to another hub
    assert hub["hubkeeper.hub.servers"] == 4
    assert hub["hubkeeper.hub.orphans"] == 1
    assert hub["hubkeeper.hub.missing"] == 2


def test_nothing_is_claimed_when_the_hub_did_not_answer() -> None:
    down = Reconciliation(time=T, hub_up=False, error="GET /users: 503")
    pairs = snapshot_documents(snapshot(), down, "main", "node1")
    assert not [doc for _, doc in pairs[:-1] if "hubkeeper.container.orphan" in doc]
    hub = pairs[-1][1]
    assert hub["hubkeeper.hub.up"] is False
    assert hub_fields(hub) == {"hubkeeper.hub.up", "hubkeeper.hub.containers"}


def test_without_a_reconciliation_the_hub_is_not_reported_up_or_down() -> None:
    pairs = snapshot_documents(snapshot(docker_up=False), None, "main", "node1")
    assert not [doc for _, doc in pairs[:-1] if "hubkeeper.container.orphan" in doc]
    hub = pairs[-1][1]
    assert hub_fields(hub) == {"hubkeeper.hub.containers"}
    assert hub["hubkeeper.docker.up"] is False and hub["hubkeeper.hub.containers"] == 2


def test_every_hubkeeper_field_is_typed_in_the_index_template() -> None:
    mappings = templates(ShipperElasticsearchConfig())["hubkeeper-logs"]["template"]["mappings"]
    produced = {
        name
        for reconciliation in (RECONCILED, None)
        for _, doc in snapshot_documents(snapshot(), reconciliation, "main", "node1")
        for name in doc
        if name.startswith("hubkeeper.")
    }
    assert {"hubkeeper.container.orphan", "hubkeeper.hub.missing"} <= produced
    for name in sorted(produced):
        node: dict[str, Any] = {"properties": mappings["properties"]}
        for part in name.split("."):
            assert part in node.get("properties", {}), f"{name} is not in the index template"
            node = node["properties"][part]
        assert node.get("type") not in (None, "keyword"), f"{name} is mapped as {node}"
