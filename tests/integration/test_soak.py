"""The chaos soak's short run (tests/bench/soak.py; the long one is the benchmark): the
whole local service under simulated users while the active hub is killed, a daemon is
killed, Elasticsearch stops, an orphan appears and NGINX's config is broken by hand;
then the books must balance."""

from pathlib import Path

from hubkeeper.deploy.elasticsearch import Elasticsearch
from tests.bench.soak import run


def test_a_short_soak_loses_no_line_and_leaves_the_books_balanced(
    tmp_path: Path, elasticsearch: Elasticsearch
) -> None:
    kinds = ("hub_kill", "daemon_kill", "elasticsearch_stop", "orphan", "nginx_broken")
    books = run(tmp_path / "soak", elasticsearch, 50.0, 3, 11, kinds, grace=20.0, es_down=10.0)
    print(books)
    assert books["lines"]["written"] > 20
    assert books["lines"]["lost"] == 0 and books["lines"]["duplicated"] == 0
    assert books["two_hubs_on_database"] == 0
    assert books["orphans_left"] == 0
    assert books["active_users_culled"] == []
    assert {fault["kind"] for fault in books["faults"]} == set(kinds)
    for fault in books["faults"]:
        assert "error" not in fault, fault
        if fault["alert"] is not None:
            assert fault["reached_s"] is not None, f"{fault['alert']} did not reach on-call"
    assert sum(books["restarts"].values()) >= 1  # the daemon killed came back by itself
