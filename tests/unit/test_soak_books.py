"""The chaos soak's pure parts (tests/bench/soak.py): the seeded fault plan, the lines users
print, and the books of lines written against lines found."""

import json

from tests.bench.soak import (
    FAULT_KINDS,
    WATCHDOGGED,
    active_culls,
    balance,
    browses,
    expected_alert,
    line_text,
    plan,
)


def test_the_same_seed_gives_the_same_faults_and_another_seed_others() -> None:
    assert plan(7, 1200) == plan(7, 1200)
    assert plan(7, 1200) != plan(8, 1200)


def test_every_kind_is_caused_at_least_once_within_the_first_80_percent() -> None:
    faults = plan(3, 180)
    assert {fault.kind for fault in faults} == set(FAULT_KINDS)
    assert all(0.1 * 180 <= fault.at <= 0.8 * 180 for fault in faults)
    assert [f.at for f in faults] == sorted(f.at for f in faults)
    assert all(bool(f.target) == f.kind.startswith("daemon") for f in faults)


def test_only_a_daemon_with_a_watchdog_is_frozen_and_a_frozen_watcher_pages() -> None:
    stopped = {f.target for seed in range(20) for f in plan(seed, 1800) if f.kind == "daemon_stop"}
    assert stopped == set(WATCHDOGGED) and "cull" not in stopped
    assert expected_alert("daemon_stop", "watch-hubs") == "HubkeeperWatcherDown"
    assert expected_alert("daemon_stop", "ship-logs") is None
    assert expected_alert("proxy_kill", "a") == "HubkeeperFailover"


def test_a_long_run_has_about_one_fault_a_minute() -> None:
    assert len(plan(1, 1800)) == 30


def test_every_event_carries_its_id_in_its_first_line() -> None:
    for kind in ("plain", "json", "traceback", "long", "backwards"):
        first = line_text("s7", "soak3", 12, kind)[0]
        assert "s7-soak3-12" in first, kind
    assert len(line_text("s7", "u", 1, "traceback")) == 4
    assert len(line_text("s7", "u", 1, "long")[0]) > 16_384  # past Docker's split size
    one, two = (json.loads(line_text("s7", "u", n, "backwards")[0]) for n in (1, 2))
    assert two["@timestamp"] < one["@timestamp"]  # the clock runs backwards


def test_the_books_count_lost_and_duplicated_ids() -> None:
    written = {"a", "b", "c"}
    assert balance(written, ["a", "b", "c"]) == {"written": 3, "lost": 0, "duplicated": 0}
    assert balance(written, ["a", "a", "c", "x"]) == {"written": 3, "lost": 1, "duplicated": 1}


ACCESS = """\
127.0.0.1 - - [01/Dec/2026:02:23:30 +0000] "GET /user/soak0/api/status HTTP/1.1" 200 83 "-" "x"
127.0.0.1 - - [01/Dec/2026:02:23:40 +0000] "GET /user/soak0/lab/api/status HTTP/1.1" 200 83 "-" "x"
127.0.0.1 - - [01/Dec/2026:02:23:50 +0000] "GET /user/soak0/api/status HTTP/1.1" 302 0 "-" "x"
"""


def test_servers_reached_are_read_from_nginx_with_their_server_name() -> None:
    reached = browses(ACCESS)
    assert sorted(reached) == [("soak0", ""), ("soak0", "lab")]
    assert reached["soak0", ""] == [reached["soak0", "lab"][0] - 10]  # the 302 is no use


def test_a_cull_is_of_an_active_server_when_the_hub_knew_of_a_use_within_the_timeout() -> None:
    reached = {("u", ""): [100.0, 150.0], ("u", "lab"): [100.0]}
    culls = [("u", "", 180.0), ("u", "", 200.0), ("u", "lab", 120.0), ("v", "", 10.0)]
    active, returned = active_culls(reached, culls, 40.0, 5.0)
    assert active == ["u/ 30s after use", "u/lab 20s after use"]  # 200: 50 s idle, none
    assert returned == []


def test_a_user_back_within_the_hubs_activity_lag_is_a_race_counted_apart() -> None:
    """Idle 52 s, back 4 s before the cull: the hub could not know (it learns 5 s late)."""
    reached = {("u", ""): [100.0, 156.0, 158.0]}
    assert active_culls(reached, [("u", "", 160.0)], 40.0, 5.0) == ([], ["u/ back 4s before"])
    # back 6 s before: the hub knew, the cull is of an active server
    reached = {("u", ""): [100.0, 154.0]}
    assert active_culls(reached, [("u", "", 160.0)], 40.0, 5.0) == (["u/ 6s after use"], [])
