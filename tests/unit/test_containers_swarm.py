"""The whole swarm's books from a manager's answers (pure), and a node exporter's CPU
counters matched to services."""

from hubkeeper.config import LabelsConfig
from hubkeeper.watchers.containers.swarm import SwarmNode, service_entries, swarm_nodes
from hubkeeper.watchers.culler.activity import task_cpu_seconds

LABELS = LabelsConfig()
NODES = [
    {"ID": "n1", "Description": {"Hostname": "hk-node1"}, "Spec": {"Role": "manager"},
     "Status": {"State": "ready", "Addr": "192.0.2.11"}},
    {"ID": "n2", "Description": {"Hostname": "hk-node2"}, "Spec": {"Role": "worker"},
     "Status": {"State": "ready", "Addr": "192.0.2.12"}},
    {"ID": "n3", "Description": {"Hostname": "hk-node3"}, "Spec": {"Role": "worker"},
     "Status": {"State": "down", "Addr": "192.0.2.13"}},
]  # fmt: skip


def service(sid: str, user: str, container_labels: bool = False) -> dict:
    tags = {LABELS.user: user, LABELS.hub: "lab", LABELS.image: "singleuser:1"}
    spec = {
        "Name": f"jupyter-{user}",
        "Labels": {} if container_labels else tags,
        "TaskTemplate": {
            "ContainerSpec": {"Image": "singleuser:1@sha256:00", "Labels": tags},
            "Resources": {"Limits": {"MemoryBytes": 512 << 20, "NanoCPUs": 500_000_000}},
        },
    }
    return {"ID": sid, "Spec": spec, "CreatedAt": "2026-11-30T10:00:00.5Z"}


def task(sid: str, node: str, state: str = "running", desired: str = "running") -> dict:
    return {"ServiceID": sid, "NodeID": node, "DesiredState": desired, "Status": {"State": state}}


def test_nodes_are_named_by_hostname_and_up_when_ready() -> None:
    nodes = swarm_nodes(NODES)
    assert nodes["n3"] == SwarmNode("hk-node3", "192.0.2.13", "worker", up=False)
    assert [node.up for node in nodes.values()] == [True, True, False]


def test_each_placed_service_is_one_entry_on_its_tasks_node_lost_when_the_node_is_down() -> None:
    services = [service("s1", "alice"), service("s2", "bob", container_labels=True),
                service("s3", "carol"), service("s4", "dave")]  # fmt: skip
    tasks = [
        task("s1", "n2"),
        task("s2", "n3", desired="shutdown"),  # what the manager sets when a node goes down
        task("s3", "n2", state="pending"),
        task("s4", "n2", state="complete", desired="shutdown"),
    ]
    entries = service_entries(services, tasks, swarm_nodes(NODES), LABELS)
    assert [(e.user, e.node, e.lost) for e in entries] == [
        ("alice", "hk-node2", False),
        ("bob", "hk-node3", True),  # labels only on its containers: still the hub's
    ]  # carol's task is still being placed: no container yet, as on one engine
    alice = entries[0]
    assert (alice.id, alice.name, alice.image, alice.hub) == ("s1", "jupyter-alice",
                                                              "singleuser:1", "lab")  # fmt: skip
    assert (alice.memory_limit, alice.cpu_quota, alice.cpu_period) == (512 << 20, 50_000, 100_000)
    assert alice.started_at == 1796032800.5


def test_services_without_the_hubs_user_label_are_not_listed() -> None:
    other = service("s9", "x")
    other["Spec"]["Labels"] = other["Spec"]["TaskTemplate"]["ContainerSpec"]["Labels"] = {}
    assert service_entries([other], [task("s9", "n2")], swarm_nodes(NODES), LABELS) == ()


def test_a_node_exporters_cpu_counters_are_matched_to_services_by_task_container_name() -> None:
    metrics = "\n".join([
        "# TYPE container_cpu_usage_seconds_total counter",
        'container_cpu_usage_seconds_total{name="jupyter-alice.1.x7",cpu="total"} 12.5',
        'container_cpu_usage_seconds_total{name="jupyter-alice-2.1.y8",cpu="total"} 3.0',
        'container_cpu_usage_seconds_total{name="jupyter-bob.1.z9",cpu="total"} 1.0',
        "",
    ])  # fmt: skip
    readings = task_cpu_seconds(metrics, {"jupyter-alice": "s1", "jupyter-carol": "s3"}, 99.0)
    assert readings == [("s1", 99.0, 12.5)]
