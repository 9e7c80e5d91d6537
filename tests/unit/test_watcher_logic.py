from hubkeeper.watchers.hubs.logic import (
    HubHealth,
    Limits,
    NginxConfigCheck,
    View,
    after_failover,
    decide,
    nginx_check_due,
    nginx_config_needs_repair,
    nginx_config_news,
    observe,
    standbys,
)

LIMITS = Limits(startup_grace=5, hold_time=300, max_failovers_per_hour=3)
UP, DOWN, UNKNOWN = HubHealth("up"), HubHealth("down"), HubHealth("unknown")


def view(**changes: object) -> View:
    base = {
        "now": 10_000.0,
        "started_at": 0.0,
        "hubs": ("a", "b"),
        "active": "a",
        "health": {"a": DOWN, "b": DOWN},
    }
    return View(**{**base, **changes})


def run(results: list[bool], rise: int = 2, fall: int = 3) -> HubHealth:
    health = HubHealth()
    for ok in results:
        health = observe(health, ok, rise, fall)
    return health


def test_rise_and_fall_thresholds() -> None:
    assert run([True]).state == "unknown"
    assert run([True, True]).state == "up"
    assert run([True, True, False, False]).state == "up"
    assert run([True, True, False, False, False]).state == "down"
    assert run([False, False, False, True]).state == "down"
    assert run([False, False, False, True, True]).state == "up"
    # an isolated failure between successes never adds up
    assert run([True, True, False, True, False, True, False]).state == "up"


def test_a_hub_only_late_to_answer_is_down_once_that_lasted_the_hang_time() -> None:
    """Found by the chaos soak on a loaded machine: JupyterHub's event loop blocked 1.3 s
    (up to 2.6 s) at bursts of spawns, two late probes made the busy hub down, and 50
    failovers followed in 20 minutes, each standby as busy as the hub it replaced."""

    def probes(*results: tuple[float, bool, bool]) -> HubHealth:  # (when, ok, late)
        health = UP
        for now, ok, late in results:
            health = observe(health, ok, 2, 2, late, now, hang_time=10.0)
        return health

    late = [(t, False, True) for t in (100.0, 100.75, 101.5, 102.25)]
    assert probes(*late).state == "up"  # busy for 2.25 s: still up
    assert probes(*late, (109.0, False, True)).state == "up"
    assert probes(*late, (110.0, False, True)).state == "down"  # late for 10 s: hung
    assert probes(*late, (105.0, True, False), (110.0, False, True)).state == "up"  # answered
    # refused (a dead process), or a failing proxy: down after `fall` probes, as ever
    assert probes((100.0, False, False), (100.25, False, False)).state == "down"
    assert probes((100.0, False, True), (100.25, False, False)).state == "down"
    assert probes((100.0, False, False), (100.25, False, True)).state == "down"


def test_fails_over_to_the_first_standby_in_priority_order() -> None:
    three = view(hubs=("a", "b", "c"), health={"a": DOWN, "b": DOWN, "c": DOWN})
    decision = decide(three, LIMITS)
    assert (decision.kind, decision.target, decision.reason) == ("failover", "b", "active_down")
    failed_b = view(hubs=("a", "b", "c"), health=three.health, failed_until={"b": 20_000.0})
    assert decide(failed_b, LIMITS).target == "c"


def test_healthy_or_unknown_active_means_no_action() -> None:
    assert decide(view(health={"a": UP, "b": DOWN}), LIMITS).kind == "none"
    assert decide(view(health={"a": UNKNOWN, "b": DOWN}), LIMITS).kind == "none"


def test_startup_grace_waits_even_when_the_active_is_down() -> None:
    decision = decide(view(started_at=9_998.0), LIMITS)
    assert (decision.kind, decision.reason) == ("wait", "startup_grace")


def test_hold_time_between_failovers() -> None:
    assert decide(view(failover_times=(9_900.0,)), LIMITS).reason == "hold_time"
    assert decide(view(failover_times=(9_600.0,)), LIMITS).kind == "failover"


def test_cap_per_hour_freezes_and_frozen_stays_put() -> None:
    times = (7_000.0, 8_000.0, 9_000.0)
    assert decide(view(failover_times=times), LIMITS).kind == "freeze"
    assert decide(view(failover_times=(1_000.0, 2_000.0, 6_000.0)), LIMITS).kind == "failover"
    assert decide(view(frozen=True), LIMITS).reason == "frozen"


def test_no_standby_left() -> None:
    decision = decide(view(failed_until={"b": 10_500.0}), LIMITS)
    assert (decision.kind, decision.reason) == ("wait", "no_standby")
    assert standbys(view(failed_until={"b": 10_500.0})) == []
    assert standbys(view(failed_until={"b": 9_000.0})) == ["b"]


def test_a_second_hub_answering_is_fenced_not_failed_back_to() -> None:
    decision = decide(view(health={"a": UP, "b": UP}), LIMITS)
    assert (decision.kind, decision.target) == ("fence_stray", "b")
    # even when the active is down: the running stray is fenced, then a clean failover
    assert decide(view(health={"a": DOWN, "b": UP}), LIMITS).kind == "fence_stray"


def test_planned_switch_bypasses_hold_and_freeze() -> None:
    planned = view(requested="b", frozen=True, failover_times=(9_990.0,))
    decision = decide(planned, LIMITS)
    assert (decision.kind, decision.target, decision.reason) == ("switch", "b", "planned")
    assert decide(view(requested="a"), LIMITS).kind == "none"


def test_after_failover_health() -> None:
    health = after_failover({"a": UP, "b": HubHealth("unknown", 2, 0)}, "a", "b")
    assert health["a"].state == "down" and health["b"].state == "up"
    # a standby refuses connections until started: that run of failures is over
    waited = after_failover({"a": UP, "b": HubHealth("down", 0, 40)}, "a", "b")["b"]
    assert observe(waited, False, 2, 2, late=True, now=100.0, hang_time=10.0).state == "up"


def test_no_failover_while_the_lease_database_does_not_answer() -> None:
    """A database outage is not a hub failure: the hubs fail with it, and the lease that
    would let the watcher act is running out."""
    decision = decide(view(store_reachable=False), LIMITS)
    assert (decision.kind, decision.reason) == ("wait", "lease_store_unreachable")
    assert decide(view(store_reachable=True), LIMITS).kind == "failover"


# -- NGINX's live config file ---------------------------------------------------------------

GENERATED = NginxConfigCheck()
EDITED = NginxConfigCheck(generated=False)  # a hand edit NGINX accepts, a newer template
REFUSED = NginxConfigCheck('unknown directive "bogus"', generated=False)
STUCK = NginxConfigCheck('unknown directive "bogus"', generated=False, repair_error="template")


def test_nginx_t_runs_at_once_then_at_most_every_check_interval() -> None:
    assert nginx_check_due(now=100.0, last=None, interval=15.0)
    assert not nginx_check_due(now=114.9, last=100.0, interval=15.0)
    assert nginx_check_due(now=115.0, last=100.0, interval=15.0)


def test_only_a_file_nginx_refuses_is_replaced_never_a_hand_edit_it_accepts() -> None:
    assert nginx_config_needs_repair(REFUSED)
    assert not nginx_config_needs_repair(EDITED)
    assert not nginx_config_needs_repair(GENERATED)


def test_a_refused_file_that_stays_refused_is_logged_once_per_episode() -> None:
    assert nginx_config_news(None, STUCK) == "nginx_config_invalid"  # on start
    assert nginx_config_news(GENERATED, STUCK) == "nginx_config_invalid"
    assert nginx_config_news(STUCK, STUCK) is None  # every later check that fails
    assert nginx_config_news(STUCK, GENERATED) is None  # healed: the repair logs itself
    assert nginx_config_news(GENERATED, STUCK) == "nginx_config_invalid"  # a new episode


def test_a_hand_edit_nginx_accepts_is_logged_once_and_the_generated_file_never() -> None:
    assert nginx_config_news(GENERATED, EDITED) == "nginx_config_differs"
    assert nginx_config_news(None, EDITED) == "nginx_config_differs"
    assert nginx_config_news(EDITED, EDITED) is None
    assert nginx_config_news(None, GENERATED) is None
    assert nginx_config_news(EDITED, GENERATED) is None
