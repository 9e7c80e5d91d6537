from hubkeeper.status import DEAD_LETTERS, metric_sums, render, render_nodes, render_storage

METRICS = """\
# TYPE hubkeeper_shipper_events_total counter
hubkeeper_shipper_events_total{outcome="indexed"} 90.0
hubkeeper_shipper_events_total{outcome="dead_lettered"} 2.0
hubkeeper_shipper_events_total{outcome="duplicate"} 8.0
# TYPE hubkeeper_shipper_lag_bytes gauge
hubkeeper_shipper_lag_bytes{source="hub"} 100.0
hubkeeper_shipper_lag_bytes{source="nginx"} 23.0
# TYPE other_metric gauge
other_metric 1.0
"""


def test_metric_sums_per_name_and_per_label_value() -> None:
    sums = metric_sums(METRICS, "hubkeeper_shipper_")
    assert sums["hubkeeper_shipper_events_total"] == 100.0
    assert sums[DEAD_LETTERS] == 2.0
    assert sums["hubkeeper_shipper_lag_bytes"] == 123.0
    assert "other_metric" not in sums


def test_render_one_screen() -> None:
    view = {
        "hubs": {
            "source": "watcher",
            "active": "b",
            "generation": 2,
            "frozen": False,
            "hubs": {"a": {"state": "down", "last_probe": {"ok": False, "failed_check": "tcp"}},
                     "b": {"state": "up", "last_probe": {"ok": True}}},
            "last_failover": None,
            "nginx_config": {"local": {"error": "[emerg] unknown directive", "generated": False,
                                       "repair_error": "template refused"},
                             "http://192.0.2.9:9109": {"error": None, "generated": False,
                                                       "repair_error": None}},
        },  # fmt: skip
        "containers": {"source": "daemon", "hubkeeper_containers_seen": 3.0,
                       "hubkeeper_containers_orphans": 1.0, "hubkeeper_containers_docker_up": 1.0},
        "shipper": {"source": "unavailable"},
        "culler": {"source": "daemon", "hubkeeper_culler_last_cycle_timestamp_seconds": 990.0,
                   "hubkeeper_culler_culls_total": 4.0},
        "alerts": {"source": "am", "firing": [
            {"name": "HubkeeperFailover", "severity": "warning", "hub": "b", "summary": "a -> b"}
        ]},
    }  # fmt: skip
    screen = render(view, now=1000.0)
    assert "active hub   b   generation 2" in screen
    assert "a          down (failed tcp)" in screen
    assert (
        "NGINX config (local) REFUSED by nginx -t: [emerg] unknown directive; not replaced: "
        "template refused" in screen
    )
    assert (
        "NGINX config (http://192.0.2.9:9109) differs from the template's (until the next switch)"
        in (screen)
    )
    assert "containers 3" in screen and "orphans 1" in screen and "docker up" in screen
    assert "log shipping (unavailable)" in screen
    assert "last cycle 10 s ago" in screen and "culled 4" in screen
    assert "warning  HubkeeperFailover" in screen


def test_render_storage_names_hung_mounts_and_their_servers() -> None:
    view = {
        "source": "1 of 2 storage watchers",
        "nodes": {
            "127.0.0.1:9105": {
                "node": "node-a",
                "mounts": {
                    "notebooks": {"state": "hung", "capacity": None},
                    "scratch": {"state": "ok", "capacity": {"size_bytes": 100, "free_bytes": 25,
                                "inodes": 10, "free_inodes": 9}},
                },
                "nfs": {"filer": {"state": "down"}},
                "owncloud": {"state": "maintenance"},
                "servers_on_hung_storage": [{"user": "alice", "server": ""},
                                            {"user": "bob", "server": "gpu"}],
            },
            "node-b:9105": None,
        },
    }  # fmt: skip
    lines = render_storage(view)
    assert lines[0] == "notebook storage (1 of 2 storage watchers)"
    assert "notebooks HUNG" in lines[1] and "scratch ok (25% free, inodes 90%)" in lines[1]
    assert "NFS filer down" in lines[1] and "Owncloud maintenance" in lines[1]
    assert lines[2] == "    servers on hung storage: alice, bob/gpu"
    assert lines[3].split() == ["node-b:9105", "does", "not", "answer"]


def test_render_a_line_per_swarm_node_and_the_cluster_total() -> None:
    metrics = "\n".join([
        'hubkeeper_containers_seen 0',
        'hubkeeper_swarm_node_up{node="hk-node1",role="manager"} 1',
        'hubkeeper_swarm_node_up{node="hk-node2",role="worker"} 0',
        'hubkeeper_swarm_node_servers{node="hk-node1"} 0',
        'hubkeeper_swarm_node_servers{node="hk-node2"} 2',
        'hubkeeper_swarm_node_missing_servers{node="hk-node1"} 0',
        'hubkeeper_swarm_node_missing_servers{node="hk-node2"} 2',
        "",
    ])  # fmt: skip
    lines = render_nodes({"source": "daemon", **metric_sums(metrics, "hubkeeper_")})
    assert lines == [
        "  node hk-node1             up    servers 0   missing 0",
        "  node hk-node2             DOWN  servers 2   missing 2",
        "  cluster: 2 nodes, 1 up, 2 servers",
    ]
    assert render_nodes({"source": "daemon", "hubkeeper_containers_seen": 1.0}) == []
