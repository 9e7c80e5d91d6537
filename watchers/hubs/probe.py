"""Deep probes of one hub instance: its hub (health, API, database) and its proxy (routes).

The hub is probed on its own port, the proxy through its API, so that a dead hub behind a
live proxy (the common failure: a crash, an OOM kill, a blocked event loop) is told from a
dead proxy: the first keeps routing users to their servers while the standby takes over.
Each check has its own timeout and the first failure ends the probe: a hub that accepts
connections but hangs (SIGSTOP, a blocked event loop) fails on the HTTP checks.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from hubkeeper.config import HubInstance, Secret

Routes = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class ProbeResult:
    hub: str
    ok: bool
    failed_check: str | None = None
    error: str | None = None
    durations: dict[str, float] = field(default_factory=dict)

    @property
    def late(self) -> bool:
        """The hub accepted the connection but did not answer in time: busy or hung, not
        gone (a dead process refuses, a host that is down does not even accept)."""
        return self.failed_check != "proxy" and self.error == "ReadTimeout"


class ProxyError(Exception):
    pass


def proxy_routes(instance: HubInstance, proxy_token: Secret | None, timeout: float) -> Routes:
    """The proxy's routing table (configurable-http-proxy's ``GET /api/routes``)."""
    headers = {"Authorization": f"token {proxy_token.reveal()}"} if proxy_token else {}
    url = f"http://{instance.host}:{instance.proxy_api_port}/api/routes"
    response = requests.get(url, headers=headers, timeout=timeout)
    response.raise_for_status()
    routes = response.json()
    if not isinstance(routes, dict):
        raise ProxyError("the routing table is not an object")
    return routes


def user_routes(routes: Routes) -> dict[str, str]:
    """The routes to user servers: path -> target."""
    return {
        path: str(route.get("target"))
        for path, route in routes.items()
        if isinstance(route, dict) and route.get("user")
    }


def routes_to_hub(instance: HubInstance, routes: Routes) -> bool:
    """Whether the proxy sends ``/`` (the hub's pages and API) to this instance's hub."""
    route = routes.get("/")
    target = str(route.get("target", "")) if isinstance(route, dict) else ""
    return target.rstrip("/").endswith(f":{instance.hub_port}")


def probe(
    instance: HubInstance, token: Secret | None, proxy_token: Secret | None, timeout: float
) -> ProbeResult:
    base = f"http://{instance.host}:{instance.hub_port}"
    headers = {"Authorization": f"token {token.reveal()}"} if token is not None else {}

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

    def proxy() -> None:
        if not routes_to_hub(instance, proxy_routes(instance, proxy_token, timeout)):
            raise ProxyError("the proxy has no route to this hub")

    steps: list[tuple[str, Callable[[], None]]] = [
        ("health", health),
        ("api", get_json("/hub/api/")),
    ]
    if token is not None:  # GET /hub/api/user resolves the token against the hub database
        steps.append(("database", get_json("/hub/api/user", auth=True)))
    steps.append(("proxy", proxy))
    durations: dict[str, float] = {}
    for name, check in steps:
        started = time.monotonic()
        try:
            check()
        except (OSError, requests.RequestException, ValueError, ProxyError) as error:
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
