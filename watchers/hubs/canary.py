"""The spawn canary: start and stop a server for a canary user through the active hub.

It finds a broken spawner (Docker engine, image, limits) before a user does. A failing
canary alerts but never fails over: the standby shares the spawner.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram

from hubkeeper.config import HubClientConfig, WatcherConfig
from hubkeeper.hubapi import HubAPIError, HubClient
from hubkeeper.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class CanaryResult:
    ok: bool
    seconds: float
    error: str | None = None


class SpawnCanary:
    def __init__(
        self, settings: WatcherConfig, hub: HubClientConfig, registry: CollectorRegistry
    ) -> None:
        self.user = settings.canary_user
        self.timeout = settings.canary_timeout
        self.client = HubClient(
            HubClientConfig(url=hub.url, token=settings.hub_token, timeout=hub.timeout, retries=1)
        )
        self.last: CanaryResult | None = None
        # Exported from the first canary on: a 0 before any ran would page for nothing.
        self.registry = registry
        self.success = Gauge(
            "hubkeeper_watcher_canary_success",
            "1 when the last spawn canary succeeded",
            registry=None,
        )
        self.duration = Histogram(
            "hubkeeper_watcher_canary_duration_seconds",
            "Start to stop of the spawn canary",
            registry=registry,
            buckets=(1, 2, 5, 10, 20, 30, 60, 120),
        )

    def run(self) -> CanaryResult:
        started = time.monotonic()
        try:
            self._spawn_and_stop()
            result = CanaryResult(True, time.monotonic() - started)
        except (HubAPIError, TimeoutError) as error:
            result = CanaryResult(False, time.monotonic() - started, str(error))
            self._stop_quietly()
        if self.last is None:
            self.registry.register(self.success)
        self.last = result
        self.success.set(1 if result.ok else 0)
        self.duration.observe(result.seconds)
        log.info(
            "spawn_canary",
            user=self.user,
            ok=result.ok,
            seconds=round(result.seconds, 2),
            error=result.error,
        )
        return result

    def _spawn_and_stop(self) -> None:
        """Start, wait until ready, stop, wait until gone: all within ``timeout``."""
        deadline = time.monotonic() + self.timeout
        self.client.start_server(self.user)  # the hub may hold this until the spawn is done
        self._wait(lambda server: bool(server and server.get("ready")), "ready", deadline)
        self.client.stop_server(self.user)
        self._wait(lambda server: server is None, "stopped", deadline)

    def _wait(
        self, done: Callable[[dict[str, Any] | None], bool], what: str, deadline: float
    ) -> None:
        while True:
            server = self.client.user(self.user)["servers"].get("")
            if time.monotonic() > deadline:
                raise TimeoutError(f"canary server not {what} within {self.timeout:g}s")
            if done(server):
                return
            time.sleep(0.5)

    def _stop_quietly(self) -> None:
        try:
            self.client.stop_server(self.user)
        except HubAPIError as error:
            log.warning("spawn_canary_stop_failed", user=self.user, error=str(error))
