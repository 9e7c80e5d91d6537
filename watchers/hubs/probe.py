"""Deep probes of one hub: proxy TCP, then /hub/health, the API, and the database.

Each check has its own timeout and the first failure ends the probe: a hub that accepts
connections but hangs (SIGSTOP, a blocked event loop) fails on the HTTP checks.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from hubkeeper.config import HubInstance, Secret

CHECKS = ("tcp", "health", "api", "database")


@dataclass(frozen=True)
class ProbeResult:
    hub: str
    ok: bool
    failed_check: str | None = None
    error: str | None = None
    durations: dict[str, float] = field(default_factory=dict)


def probe(instance: HubInstance, token: Secret | None, timeout: float) -> ProbeResult:
    base = f"http://{instance.host}:{instance.proxy_port}"
    headers = {"Authorization": f"token {token.reveal()}"} if token is not None else {}

    def tcp() -> None:
        with socket.create_connection((instance.host, instance.proxy_port), timeout=timeout):
            pass

    def get_json(path: str, auth: bool = False) -> Callable[[], None]:
        def check() -> None:
            response = requests.get(
                base + path,
                headers=headers if auth else {},
                timeout=timeout,
                allow_redirects=False,
            )
            response.raise_for_status()
            response.json()

        return check

    def health() -> None:
        requests.get(base + "/hub/health", timeout=timeout).raise_for_status()

    # GET /hub/api/user resolves the token against the hub database.
    steps: list[tuple[str, Callable[[], None]]] = [
        ("tcp", tcp),
        ("health", health),
        ("api", get_json("/hub/api/")),
    ]
    if token is not None:
        steps.append(("database", get_json("/hub/api/user", auth=True)))
    durations: dict[str, float] = {}
    for name, check in steps:
        started = time.monotonic()
        try:
            check()
        except (OSError, requests.RequestException, ValueError) as error:
            durations[name] = time.monotonic() - started
            return ProbeResult(instance.name, False, name, type(error).__name__, durations)
        durations[name] = time.monotonic() - started
    return ProbeResult(instance.name, True, durations=durations)


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether anything accepts TCP connections there (a stopped process still does)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
