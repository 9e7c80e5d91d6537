"""Push alerts to every Alertmanager peer through its v2 API (the peers deduplicate).

An alert is re-sent while it fires, with ``endsAt`` a few resend intervals ahead, so it
resolves by itself if its sender dies; a resolved alert is sent once with ``endsAt`` now.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

import requests

from hubkeeper.log import get_logger

log = get_logger(__name__)
RUNBOOK_BASE = "alerts/runbooks"


@dataclass(frozen=True)
class Alert:
    name: str
    severity: str
    summary: str
    description: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return self.name, tuple(sorted(self.labels.items()))

    def payload(self, starts_at: float, ends_at: float, runbook_base: str) -> dict[str, object]:
        return {
            "labels": {"alertname": self.name, "severity": self.severity, **self.labels},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": f"{runbook_base}/{self.name}.md",
            },
            "startsAt": _iso(starts_at),
            "endsAt": _iso(ends_at),
        }


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


class AlertPusher:
    """Keeps what fires, re-sends it every ``resend_interval``, and sends resolutions."""

    def __init__(
        self,
        urls: list[str],
        resend_interval: float,
        runbook_base: str = RUNBOOK_BASE,
        timeout: float = 5.0,
    ) -> None:
        self.urls = urls
        self.resend_interval = resend_interval
        self.runbook_base = runbook_base
        self.timeout = timeout
        self.firing: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[Alert, float]] = {}
        self.last_sent = 0.0

    def update(self, alerts: list[Alert], now: float) -> None:
        """Make ``alerts`` the firing set; push changes at once, the rest every interval."""
        current = {alert.key: alert for alert in alerts}
        resolved = [(a, t) for key, (a, t) in self.firing.items() if key not in current]
        new = [key for key in current if key not in self.firing]
        for key in new:
            log.warning("alert_firing", alert=current[key].name, **current[key].labels)
        for alert, _ in resolved:
            log.info("alert_resolved", alert=alert.name, **alert.labels)
        self.firing = {
            key: (alert, self.firing[key][1] if key in self.firing else now)
            for key, alert in current.items()
        }
        if new or resolved or now - self.last_sent >= self.resend_interval:
            ends = now + 4 * self.resend_interval
            payload = [a.payload(t, ends, self.runbook_base) for a, t in self.firing.values()]
            payload += [a.payload(t, now, self.runbook_base) for a, t in resolved]
            if payload and self.urls:
                # in the background: an unreachable Alertmanager must not stall the caller
                threading.Thread(target=self._send, args=(payload,), daemon=True).start()
            self.last_sent = now

    def _send(self, payload: list[dict[str, object]]) -> None:
        for url in self.urls:
            try:
                response = requests.post(
                    f"{url.rstrip('/')}/api/v2/alerts", json=payload, timeout=self.timeout
                )
                response.raise_for_status()
            except requests.RequestException as error:
                log.warning("alertmanager_unreachable", url=url, error=type(error).__name__)
