"""Alerts end to end: a real Prometheus scrapes the real hubs, NGINX and the watcher, a
real Alertmanager routes with the generated config, PagerDuty events reach an HTTP
receiver and e-mail a real SMTP server, all on 127.0.0.1 with short intervals."""

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from hubkeeper.deploy import hubctl
from hubkeeper.deploy.elasticsearch import Elasticsearch, log_store_overrides
from hubkeeper.deploy.stack import Stack, running_stack, wait_for
from tests.integration.alerting import (
    Inbox,
    Notification,
    Receiver,
    alertmanager_alerts,
    alerts_section,
    http_receiver,
    pagerduty_events,
    prometheus_alerts,
    prometheus_query,
    smtp_server,
    wait_for_one,
    webhooks_section,
)

# the rules on a six times faster clock (alerts/render.py), the routing as written: the
# `for: 1m` of JupyterHubDown in alerts/rules/hubs.yml waits 10 s
RULE_TIME_SCALE = 1 / 6
FOR_HUB_DOWN = 60.0 * RULE_TIME_SCALE
ROUTING_KEY = "e93facc04764012d7bfb002500d5d1a6"
RUNBOOKS = "https://runbooks.lab.test/hubkeeper"
# hub b stays a standby: no failover within the test, so hub a stays down
WATCHER = {"interval": 0.5, "probe_timeout": 0.5, "startup_grace": 3600.0}


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    yield from smtp_server()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from http_receiver()


@pytest.fixture
def stack(tmp_path: Path, receiver: Receiver, inbox: tuple[Inbox, int]) -> Iterator[Stack]:
    key = tmp_path / "pagerduty.key"
    key.write_text(ROUTING_KEY + "\n")
    with running_stack(
        tmp_path / "stack",
        hub_name="alerts-e2e",
        watcher=WATCHER,
        prometheus=True,
        overrides={
            "alerts": {
                **alerts_section(receiver, inbox[1], str(key)),
                "rule_time_scale": RULE_TIME_SCALE,
            }
        },
    ) as running:
        yield running


def kill_hub(stack: Stack, name: str) -> None:
    """SIGKILL the hub and its proxy (the proxy runs in a session of its own)."""
    proxy = hubctl.proxy_pid(stack.config, name)
    hub = hubctl.launched_pid(stack.config, name)
    assert hub is not None and proxy is not None, f"hub {name} is not running"
    os.killpg(hub, signal.SIGKILL)
    os.kill(proxy, signal.SIGKILL)


def test_hub_down_pages_by_pagerduty_and_email_then_resolves(
    stack: Stack, receiver: Receiver, inbox: tuple[Inbox, int]
) -> None:
    mails, prometheus, hub_a = inbox[0], stack.prometheus_url, stack.config.jupyterhub.instance("a")

    def scraped(query: str) -> bool:
        return [r["value"][1] for r in prometheus_query(prometheus, query)] == ["1"]

    for query in (
        'up{job="jupyterhub", hub="a"}',  # with the hubkeeper-prometheus token
        'up{job="jupyterhub-nginx"}',
        'up{job="hubkeeper-watcher"}',
        'hubkeeper_watcher_active_hub{hub="a"}',
    ):
        wait_for(lambda q=query: scraped(q), 30, f"Prometheus to scrape {query}")
    # the standby is scraped too, and down (its first scrape may come a second later)
    standby = 'up{job="jupyterhub", hub="b"}'
    wait_for(
        lambda: [r["value"][1] for r in prometheus_query(prometheus, standby)] == ["0"],
        30, "Prometheus to see the standby down",
    )  # fmt: skip
    watchdog = wait_for_one(lambda: receiver.posted("/watchdog"), 30, "the Watchdog")
    assert watchdog["alerts"][0]["labels"]["alertname"] == "Watchdog"

    killed = time.time()
    kill_hub(stack, "a")

    # the page: PagerDuty Events v2 with the routing key from its file ...
    page = wait_for_one(
        lambda: pagerduty_events(receiver, "JupyterHubDown", "trigger"),
        FOR_HUB_DOWN + 60,
        "the JupyterHubDown page",
    )
    paged = next(r.at for r in receiver.requests if r.body is page)
    assert FOR_HUB_DOWN <= paged - killed <= FOR_HUB_DOWN + 25, paged - killed
    assert page["routing_key"] == ROUTING_KEY
    assert page["payload"]["severity"] == "critical"
    assert page["payload"]["component"] == "a" and page["payload"]["group"] == "platform"
    assert page["payload"]["summary"] == (
        "[FIRING:1] JupyterHubDown hub=a (critical): JupyterHub a is down"
    )
    details = page["payload"]["custom_details"]
    assert details["runbook_url"] == f"{RUNBOOKS}/JupyterHubDown.md"
    assert f"at 127.0.0.1:{hub_a.proxy_port} for over a minute" in details["description"]
    assert page["links"] == [{"href": f"{RUNBOOKS}/JupyterHubDown.md", "text": "Runbook"}]

    # ... and the e-mail, through a real SMTP server
    mail = wait_for_one(
        lambda: mails.matching("[FIRING:1] JupyterHubDown hub=a (critical)"), 20, "the e-mail"
    )
    assert mail.recipients == ["oncall@lab.test"]
    assert mail.message["From"] == "hubkeeper@lab.test"
    assert "Hub a is the active hub" in mail.body
    assert f"Runbook: {RUNBOOKS}/JupyterHubDown.md" in mail.body
    assert (
        "hub=a" in mail.body and "severity=critical" in mail.body and "team=platform" in mail.body
    )

    # the watcher's own page about the same hub goes the same way, with the same runbooks
    pushed = wait_for_one(
        lambda: pagerduty_events(receiver, "HubkeeperAllHubsDown", "trigger"), 20, "watcher page"
    )
    assert pushed["payload"]["custom_details"]["runbook_url"] == (
        f"{RUNBOOKS}/HubkeeperAllHubsDown.md"
    )

    # NGINX answers nothing either: that alert fires but is inhibited by JupyterHubDown
    wait_for(
        lambda: prometheus_alerts(prometheus, "JupyterHubUnreachableThroughNginx"),
        30,
        "the NGINX alert to fire in Prometheus",
    )

    def suppressed() -> list[dict]:
        held = alertmanager_alerts(stack.alertmanager_url, "JupyterHubUnreachableThroughNginx")
        return [a for a in held if a["status"]["inhibitedBy"]]

    held = wait_for_one(suppressed, 20, "Alertmanager to inhibit the NGINX alert")
    assert held["status"]["state"] == "suppressed"
    time.sleep(3 * stack.config.alerts.group_interval)  # any notification would be out now

    # the hub comes back: resolved notifications
    stack.start_hub("a")
    resolved = wait_for_one(
        lambda: pagerduty_events(receiver, "JupyterHubDown", "resolve"), 60, "the resolve event"
    )
    assert resolved["dedup_key"] == page["dedup_key"]
    wait_for_one(
        lambda: mails.matching("[RESOLVED] JupyterHubDown hub=a (critical)"), 30, "resolved e-mail"
    )

    # no page and no mail for the inhibited alert, the standby, or the Watchdog
    paged_about = {
        (e["payload"]["class"], e["payload"]["component"]) for e in receiver.posted("/pagerduty")
    }
    assert paged_about == {("JupyterHubDown", "a"), ("HubkeeperAllHubsDown", "a")}
    subjects = [m.subject for m in mails.mails]
    assert not [s for s in subjects if "JupyterHubUnreachableThroughNginx" in s or "Watchdog" in s]
    assert all(m.recipients == ["oncall@lab.test"] for m in mails.mails)
    assert not receiver.posted("/warnings")


def test_one_failover_is_one_alert_and_one_notification(tmp_path: Path, receiver: Receiver) -> None:
    """The watcher pushes HubkeeperFailover at once and Prometheus's rule raises it from the
    watcher's metrics: with the same labels, Alertmanager holds one alert and warns once
    (its webhook, recorded as a notification)."""
    with running_stack(
        tmp_path / "stack",
        hub_name="alerts-failover",
        watcher={"interval": 0.5, "probe_timeout": 0.5, "startup_grace": 2.0},
        prometheus=True,
        overrides={"alerts": webhooks_section(receiver)},
    ) as stack:
        prometheus = stack.prometheus_url
        wait_for(
            lambda: prometheus_query(prometheus, 'hubkeeper_watcher_active_hub{hub="a"} == 1'),
            30, "Prometheus to scrape the watcher",
        )  # fmt: skip
        kill_hub(stack, "a")
        wait_for_one(
            lambda: prometheus_alerts(prometheus, "HubkeeperFailover"), 90, "the rule to fire"
        )

        def warned() -> list[Notification]:
            return [
                notification
                for notification in receiver.notifications("/warnings")
                if notification.alertname == "HubkeeperFailover"
            ]

        wait_for_one(warned, 30, "the failover warning")
        time.sleep(3 * stack.config.alerts.group_interval)  # a second one would be out now
        held = alertmanager_alerts(stack.alertmanager_url, "HubkeeperFailover")
        assert len(held) == 1, [a["labels"] for a in held]
        assert held[0]["labels"] == {
            "alertname": "HubkeeperFailover", "hub": "b", "severity": "warning",
            "team": "platform",
        }  # fmt: skip
        (warning,) = warned()  # one notification
        assert (warning.receiver, warning.status, warning.labels) == (
            "warnings", "firing", held[0]["labels"],
        )  # fmt: skip
        lines = (stack.logs / "watcher.log").read_text().splitlines()
        pushed = [json.loads(line) for line in lines if '"alert_firing"' in line]
        assert "HubkeeperFailover" in {e.get("alert") for e in pushed}  # both sources raised it


QUIET_DAEMONS = ("export-containers", "cull", "ship-logs")


def firing_or_pending(prometheus: str) -> list[tuple[str, str, dict]]:
    response = requests.get(f"{prometheus}/api/v1/alerts", timeout=5)
    response.raise_for_status()
    return [
        (alert["labels"]["alertname"], alert["state"], alert["labels"])
        for alert in response.json()["data"]["alerts"]
        if alert["labels"]["alertname"] != "Watchdog"
    ]


def test_a_healthy_stack_raises_nothing_but_the_watchdog(
    tmp_path: Path, receiver: Receiver, inbox: tuple[Inbox, int], elasticsearch: Elasticsearch
) -> None:
    """Every daemon scraped, every rule evaluated each second, and the watcher, the exporter
    and the shipper restarted: nothing but the Watchdog fires, and once the restarted
    daemons are scraped again nothing is even pending (a restart's target is down for a
    scrape: pending, never firing)."""
    key = tmp_path / "pagerduty.key"
    key.write_text(ROUTING_KEY + "\n")
    workdir = tmp_path / "stack"
    with running_stack(
        workdir,
        hub_name="alerts-quiet",
        watcher={"interval": 0.5, "probe_timeout": 0.5},
        prometheus=True,
        daemons=QUIET_DAEMONS,
        overrides={
            **log_store_overrides(workdir, elasticsearch.url),
            "alerts": alerts_section(receiver, inbox[1], str(key)),
        },
    ) as stack:
        prometheus = stack.prometheus_url
        for job in ("hubkeeper-watcher", "hubkeeper-containers", "hubkeeper-culler",
                    "hubkeeper-shipper", "jupyterhub"):  # fmt: skip
            wait_for(
                lambda j=job: prometheus_query(prometheus, f'up{{job="{j}"}} == 1'),
                30, f"Prometheus to scrape {job}",
            )  # fmt: skip
        seen: list[tuple[str, str, dict]] = []
        deadline = time.monotonic() + 20  # twenty evaluation cycles
        while time.monotonic() < deadline:
            seen += [alert for alert in firing_or_pending(prometheus) if alert[1] == "firing"]
            time.sleep(1)
        for command in ("watch-hubs", "export-containers", "ship-logs"):
            name = "watcher" if command == "watch-hubs" else command
            (process,) = [p for p in stack.processes if p.name == name and p.running()]
            process.stop()
            stack.start_daemon(command)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            seen += [alert for alert in firing_or_pending(prometheus) if alert[1] == "firing"]
            time.sleep(1)
        assert seen == []
        assert firing_or_pending(prometheus) == []
        held = requests.get(f"{stack.alertmanager_url}/api/v2/alerts", timeout=5).json()
        assert {alert["labels"]["alertname"] for alert in held} == {"Watchdog"}
    assert not receiver.posted("/pagerduty") and not receiver.posted("/warnings")
    assert inbox[0].mails == []
