"""Orphans and missing servers: the pure comparison of containers with the hub's servers."""

import dataclasses

from hubkeeper.watchers.containers.model import ContainerInfo
from hubkeeper.watchers.containers.reconcile import (
    HubServer,
    MissingServer,
    Orphan,
    reconcile,
    servers_from_users,
)

NOW = 10_000.0


def container(
    user: str, server: str = "", hub: str = "lab", started: float = 1000.0
) -> ContainerInfo:
    return ContainerInfo(
        id=f"{user}/{server}/{hub}", name=f"jupyter-{user}", image="img", user=user,
        server=server, hub=hub, started_at=started,
    )  # fmt: skip


def test_servers_from_user_models() -> None:
    users = [
        {"name": "alice", "servers": {"": {"ready": True, "pending": None}}},
        {"name": "bob", "servers": {"gpu": {"ready": False, "pending": "spawn"}}},
        {"name": "carol"},  # a token without read:servers sees no servers key
    ]
    assert servers_from_users(users) == [
        HubServer("alice", "", True, None),
        HubServer("bob", "gpu", False, "spawn"),
    ]


def test_orphans_and_missing() -> None:
    servers = [HubServer("alice", "", True), HubServer("bob", "", True)]
    running = [container("alice"), container("ghost"), container("eve", hub="other-hub")]
    orphans, missing, known = reconcile(servers, running, running, "lab", NOW)
    assert orphans == (Orphan("ghost", "", "jupyter-ghost"),)  # another hub's is not ours
    assert missing == (MissingServer("bob", ""),)
    assert known == {"alice": frozenset({""}), "bob": frozenset({""})}


def test_named_servers_are_told_apart() -> None:
    servers = [HubServer("alice", "gpu", True)]
    running = [container("alice", ""), container("alice", "gpu")]
    orphans, missing, _ = reconcile(servers, running, running, "lab", NOW)
    assert [o.describe() for o in orphans] == ["alice (jupyter-alice)"]
    assert missing == ()


def test_pending_servers_are_neither_missing_nor_have_orphans() -> None:
    servers = [HubServer("alice", "", False, "spawn"), HubServer("bob", "", False, "stop")]
    running = [container("alice"), container("bob")]
    assert reconcile(servers, [], [], "lab", NOW)[:2] == ((), ())
    assert reconcile(servers, running, running, "lab", NOW)[:2] == ((), ())


def test_containers_younger_than_the_grace_period_are_not_orphans() -> None:
    young = container("new", started=NOW - 5)
    assert reconcile([], [young], [young], "lab", NOW - 60)[0] == ()
    assert len(reconcile([], [young], [young], "lab", NOW)[0]) == 1


def test_changes_during_the_hub_request_are_not_reported() -> None:
    # stopped while the hub was asked: present before, gone after -> not missing, not orphan
    stopping = container("alice")
    assert reconcile([HubServer("alice", "", True)], [stopping], [], "lab", NOW)[:2] == ((), ())
    assert reconcile([], [stopping], [], "lab", NOW)[0] == ()
    # started meanwhile: only in the second inventory -> not an orphan yet
    assert reconcile([], [], [container("bob")], "lab", NOW)[0] == ()


def test_escaped_labels_match_the_hubs_names() -> None:
    servers = [HubServer("a-b", "my-gpu", True)]
    escaped = container("a-2db", "my-2dgpu")
    orphans, missing, _ = reconcile(servers, [escaped], [escaped], "lab", NOW)
    assert (orphans, missing) == ((), ())
    orphan = dataclasses.replace(escaped, user="c-2dd", id="x")
    orphans, _, _ = reconcile(servers, [orphan], [orphan], "lab", NOW)
    assert orphans == (Orphan("c-2dd", "my-2dgpu", "jupyter-a-2db"),)  # unknown: label as is


def test_missing_check_can_be_off_for_swarm_nodes() -> None:
    servers = [HubServer("alice", "", True)]
    ghost = container("ghost")
    orphans, missing, _ = reconcile(servers, [ghost], [ghost], "lab", NOW, check_missing=False)
    assert (len(orphans), missing) == (1, ())


def test_a_server_on_a_swarm_node_that_is_down_is_missing_there_and_no_orphan() -> None:
    servers = [HubServer("alice", "", True), HubServer("bob", "", True)]
    lost = dataclasses.replace(container("alice"), node="hk-node3", lost=True)
    ghost = dataclasses.replace(container("ghost"), node="hk-node3", lost=True)
    running = [lost, ghost, dataclasses.replace(container("bob"), node="hk-node2")]
    orphans, missing, _ = reconcile(servers, running, running, "lab", NOW)
    assert orphans == ()  # nothing can be told about a node that does not answer
    assert missing == (MissingServer("alice", "", "hk-node3"),)
    assert missing[0].describe() == "alice (node hk-node3 down)"
