"""The hub watcher's reports (watchers/hubs/report.py): which alerts fire, with the labels of
the rule of the same name, /status and the PRTG sensor."""

import re
from dataclasses import replace
from pathlib import Path

import yaml

from hubkeeper.prtg import check
from hubkeeper.watchers.hubs import report
from hubkeeper.watchers.hubs.logic import HOUR, Decision, NginxConfigCheck
from hubkeeper.watchers.hubs.state import WatcherState

NOW = 100_000.0
RULES = Path(__file__).resolve().parents[2] / "alerts" / "rules" / "hubs.yml"
REFUSED = 'nginx: [emerg] unknown directive "bogus" in /p/nginx.conf:2'
FAILOVER = {"from": "a", "to": "b", "reason": "hub a down", "at": NOW - 60, "duration_seconds": 4.2}


def facts(**changes: object) -> report.Facts:
    base = report.Facts(
        state=WatcherState(active="a", generation=3),
        order=("a", "b"),
        health={"a": "up", "b": "unknown"},
        standbys=("b",),
        decision=Decision("stay", "active hub up"),
        last_probe={"a": {"ok": True, "seconds": 0.012}},
        max_failovers_per_hour=3,
        canary_user="hubkeeper-canary",
        canary_error=None,
        now=NOW,
    )
    return replace(base, **changes)


def names(found: list) -> list[str]:
    return [alert.name for alert in found]


def rule_labels() -> dict[str, tuple[set[str], dict[str, str]]]:
    """Per rule of hubs.yml: the labels its alerts carry (its `by` labels and its own)."""
    found = {}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            by = set(re.findall(r"by \((\w+)\)", rule["expr"]))
            found[rule["alert"]] = ({"alertname", *by, *rule["labels"]}, rule["labels"])
    return found


def every_pushed_alert() -> list:
    """One of each alert the watcher pushes."""
    state = WatcherState(
        active="a", frozen=True, unfenced=["c"], last_failover=FAILOVER, failover_times=[NOW]
    )
    down = facts(
        state=state, health={"a": "down", "b": "down"}, standbys=(),
        decision=Decision("wait", "no standby"), canary_error="spawn timed out",
        nginx_configs={"local": NginxConfigCheck(REFUSED, generated=False, repair_error="t")},
    )  # fmt: skip
    failed = [
        report.failover_failed(name, "a", "b", "boom", "a")
        for name in ("HubkeeperStandbyStartFailed", "HubkeeperNginxReloadFailed")
    ]
    repaired = report.nginx_config_repaired("a", 3, REFUSED, "/p/nginx.conf.rejected")
    return [*report.alerts(down), *failed, report.stray_fenced("c", "a"), repaired]


def test_a_healthy_pair_raises_nothing() -> None:
    assert report.alerts(facts()) == []


def test_a_pushed_alert_and_its_rule_carry_the_same_labels() -> None:
    """So that Alertmanager holds one alert, not two, when both sources raise it."""
    rules = rule_labels()
    both = [alert for alert in every_pushed_alert() if alert.name in rules]
    assert {a.name for a in both} >= {"HubkeeperFailover", "HubkeeperFenceFailed",
                                      "HubkeeperFailoverFrozen", "HubkeeperNginxReloadFailed",
                                      "HubkeeperSpawnCanaryFailed", "HubkeeperNginxConfigInvalid",
                                      "HubkeeperNginxConfigRepaired"}  # fmt: skip
    for alert in both:
        keys, fixed = rules[alert.name]
        labels = alert.payload(NOW, NOW, "x")["labels"]
        assert set(labels) == keys, alert.name
        assert {k: labels[k] for k in fixed} == fixed, alert.name


def test_every_pushed_alert_names_its_hub_and_team() -> None:
    for alert in every_pushed_alert():
        assert alert.labels == {"hub": alert.labels["hub"], "team": report.TEAM}


def test_a_failover_alerts_for_an_hour_about_the_new_active_hub() -> None:
    state = WatcherState(active="b", generation=4, last_failover=FAILOVER)
    (alert,) = report.alerts(facts(state=state, health={"a": "down", "b": "up"}, standbys=()))[1:]
    assert (alert.name, alert.labels["hub"], alert.severity) == (
        "HubkeeperFailover",
        "b",
        "warning",
    )
    assert alert.description == "Hub a failed (hub a down); b took over in 4.2 s."
    later = facts(state=state, standbys=("a",), now=FAILOVER["at"] + HOUR)
    assert report.alerts(later) == []


def test_a_failed_failover_names_the_hub_the_rule_would() -> None:
    start = report.failover_failed("HubkeeperStandbyStartFailed", "a", "b", "exit 1", "a")
    reload = report.failover_failed("HubkeeperNginxReloadFailed", "a", "b", "no reload", "a")
    assert start is not None and start.labels["hub"] == "b"  # the standby that did not start
    assert reload is not None and reload.labels["hub"] == "a"  # NGINX still serves a
    assert "NGINX still serves a" in reload.description
    # a hub that would not stop: raised by alerts() while it stays unfenced, not twice
    assert report.failover_failed("HubkeeperFenceFailed", "a", "b", "answers", "a") is None
    state = WatcherState(active="a", unfenced=["a"])
    assert names(report.alerts(facts(state=state))) == ["HubkeeperFenceFailed"]


def test_down_without_a_failover_pages_but_not_while_one_runs() -> None:
    down = facts(health={"a": "down", "b": "down"}, standbys=(), decision=Decision("wait", "x"))
    assert names(report.alerts(down)) == ["HubkeeperNoHealthyStandby", "HubkeeperAllHubsDown"]
    running = replace(down, decision=Decision("failover", "a down", "b"), standbys=("b",))
    assert report.alerts(running) == []


def test_a_frozen_watcher_and_a_failed_canary_page() -> None:
    frozen = facts(state=WatcherState(active="a", frozen=True), canary_error="timeout")
    found = report.alerts(frozen)
    assert names(found) == ["HubkeeperFailoverFrozen", "HubkeeperSpawnCanaryFailed"]
    assert "3 failovers within an hour" in found[0].description
    assert "(hubkeeper-canary) failed: timeout" in found[1].description


def test_the_last_hour_is_one_window() -> None:
    assert report.recent([NOW - HOUR, NOW - HOUR + 1, NOW], NOW) == [NOW - HOUR + 1, NOW]


def test_status_and_sensor() -> None:
    state = WatcherState(active="b", generation=4, last_failover=FAILOVER,
                         failover_times=[NOW - HOUR - 1, NOW - 60])  # fmt: skip
    seen = facts(state=state, health={"a": "down", "b": "up"}, standbys=())
    status = report.status(seen, ["HubkeeperFailover"])
    assert status["active"] == "b" and status["alerts"] == ["HubkeeperFailover"]
    assert status["hubs"]["a"] == {"state": "down", "last_probe": {"ok": True, "seconds": 0.012},
                                   "failed_until": None}  # fmt: skip
    payload = report.sensor(seen)
    assert check(payload) == []
    channels = {c["channel"]: c["value"] for c in payload["prtg"]["result"]}
    assert channels["Failovers last hour"] == 1 and channels["Standbys available"] == 0
    assert channels["Hub a probe time"] == 12.0 and channels["Active hub up"] == 1
    assert payload["prtg"]["text"] == (
        "active hub b (generation 4); last failover a to b (hub a down)"
    )


def test_a_standby_watcher_reports_only_its_own_trouble_with_the_lease() -> None:
    down = {"a": "down", "b": "unknown"}
    waiting = Decision("wait", "lease_store_unreachable")
    standby = report.Leadership(False, "w2/7/ab", None, None)
    assert report.alerts(facts(health=down, decision=waiting, leadership=standby)) == []
    cut_off = replace(standby, store_error="OperationalError: connection refused")
    found = report.alerts(facts(health=down, decision=waiting, leadership=cut_off))
    assert names(found) == ["HubkeeperWatcherLeaseStoreUnreachable"]
    assert found[0].labels == {"hub": "a", "team": "platform"}
    assert "w2/7/ab" in found[0].description and "connection refused" in found[0].description


def test_the_leader_pages_for_the_lease_store_beside_the_hub_alerts() -> None:
    leader = report.Leadership(True, "w1/5/cd", 4, "OperationalError: timeout")
    found = names(report.alerts(facts(health={"a": "down", "b": "unknown"},
                                      decision=Decision("wait", "lease_store_unreachable"),
                                      leadership=leader)))  # fmt: skip
    assert found[0] == "HubkeeperWatcherLeaseStoreUnreachable"
    assert "HubkeeperAllHubsDown" in found
    status = report.status(facts(leadership=leader), [])
    assert status["leadership"]["generation"] == 4


def test_a_refused_nginx_config_that_was_replaced_is_a_warning_about_the_hub_then_served() -> None:
    alert = report.nginx_config_repaired("a", 3, REFUSED, "/p/nginx.conf.rejected")
    assert (alert.name, alert.severity, alert.labels["hub"]) == (
        "HubkeeperNginxConfigRepaired", "warning", "a",
    )  # fmt: skip
    assert REFUSED in alert.description and "/p/nginx.conf.rejected" in alert.description
    assert "generation 3" in alert.description
    # the event, not a condition: a clean check after the repair raises nothing more
    assert report.alerts(facts(nginx_configs={"local": NginxConfigCheck()})) == []


def test_a_refused_nginx_config_that_could_not_be_replaced_pages_once_for_every_host() -> None:
    stuck = NginxConfigCheck(REFUSED, generated=False, repair_error="nginx -t rejected the new")
    hosts = {
        "http://192.0.2.5:9105": stuck,
        "http://192.0.2.6:9105": NginxConfigCheck(),
        "http://192.0.2.7:9105": replace(stuck, error="[emerg] unexpected end of file"),
    }
    (alert,) = report.alerts(facts(nginx_configs=hosts))
    assert (alert.name, alert.severity, alert.labels["hub"]) == (
        "HubkeeperNginxConfigInvalid", "critical", "a",
    )  # fmt: skip
    assert f"http://192.0.2.5:9105: {REFUSED} (replacing it failed: nginx -t rejected the new)" in (
        alert.description
    )
    assert "192.0.2.7:9105: [emerg] unexpected end of file" in alert.description
    assert "192.0.2.6" not in alert.description


def test_a_hand_edit_nginx_accepts_is_shown_in_the_status_and_raises_nothing() -> None:
    edited = facts(nginx_configs={"local": NginxConfigCheck(generated=False)})
    assert report.alerts(edited) == []
    assert report.status(edited, [])["nginx_config"] == {
        "local": {"error": None, "generated": False, "repair_error": None},
    }  # fmt: skip
    assert report.status(facts(), [])["nginx_config"] == {}  # not checked (yet)
