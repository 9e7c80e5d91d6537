"""The alerting tests' HTTP receiver keeps every alert of every Alertmanager webhook
notification (the documented payload, version 4) with its status and the time received."""

import time
from collections.abc import Iterator

import pytest
import requests

from tests.integration.alerting import Receiver, http_receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from http_receiver()


def alert(name: str, status: str) -> dict:
    return {
        "status": status,
        "labels": {"alertname": name, "severity": "warning"},
        "annotations": {"summary": name},
        "startsAt": "2026-12-01T01:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-12-01T01:05:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph",
        "fingerprint": f"{len(name):016x}",
    }


def notification(receiver: str, *alerts: dict) -> dict:
    return {
        "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": alerts[0]["status"],
        "receiver": receiver, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093", "alerts": list(alerts),
    }  # fmt: skip


def test_every_alert_of_every_webhook_notification_is_recorded_in_order(
    receiver: Receiver,
) -> None:
    before = time.time()
    group = notification(
        "warnings", alert("HubkeeperFailover", "firing"), alert("HubkeeperTargetDown", "firing")
    )
    for path, body in [
        ("/warnings", group),
        ("/pagerduty", {"event_action": "trigger", "payload": {"class": "JupyterHubDown"}}),
        ("/pager", notification("pager", alert("JupyterHubDown", "resolved"))),
    ]:
        assert requests.post(f"{receiver.url}{path}", json=body, timeout=5).ok
    found = receiver.notifications()
    assert [(n.path, n.receiver, n.alertname, n.status) for n in found] == [
        ("/warnings", "warnings", "HubkeeperFailover", "firing"),
        ("/warnings", "warnings", "HubkeeperTargetDown", "firing"),
        ("/pager", "pager", "JupyterHubDown", "resolved"),
    ]
    assert all(before <= n.at <= time.time() for n in found)
    assert found[0].labels == {"alertname": "HubkeeperFailover", "severity": "warning"}
    assert receiver.notifications("/pager") == [found[2]]
