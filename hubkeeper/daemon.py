"""The shape every hubkeeper daemon shares: endpoint, scheduled jobs, clean stop on SIGTERM.

A daemon registers its periodic jobs with :meth:`Daemon.every` and calls :meth:`Daemon.run`.
Jobs run on APScheduler with ``max_instances=1`` and ``coalesce=True``: a slow cycle is
never overlapped by the next one, and missed runs collapse into one.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry

from hubkeeper import systemd
from hubkeeper.config import EndpointConfig
from hubkeeper.endpoint import Action, EndpointServer, Health, Route
from hubkeeper.log import get_logger

log = get_logger(__name__)


class Daemon:
    def __init__(
        self,
        name: str,
        endpoint: EndpointConfig,
        registry: CollectorRegistry,
        health: Health,
        routes: dict[str, Route] | None = None,
        metrics: Callable[[], bytes] | None = None,
        actions: dict[str, Action] | None = None,
    ) -> None:
        self.name = name
        self.health = health
        self.endpoint = endpoint
        self.server = EndpointServer(endpoint, registry, health, routes, metrics, actions)
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.stopping = threading.Event()
        self._notify_failed = False
        self._notify_lock = threading.Lock()  # the watchdog job notifies from its own thread

    def every(self, seconds: float, job: Callable[[], object], name: str) -> None:
        """Run ``job`` now and then every ``seconds``; exceptions are logged, not fatal."""
        self.scheduler.add_job(
            self._guarded(job, name),
            "interval",
            seconds=seconds,
            id=name,
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
            misfire_grace_time=None,
        )

    def _guarded(self, job: Callable[[], object], name: str) -> Callable[[], None]:
        def run() -> None:
            try:
                job()
            except Exception:
                log.exception("job_failed", daemon=self.name, job=name)

        return run

    def _watchdog(self) -> None:
        """Ping systemd only while the daemon reports itself healthy: a stuck daemon is
        restarted by systemd."""
        healthy, status = self.health()
        if healthy:
            self._notify("WATCHDOG=1")
        else:
            log.warning("watchdog_withheld", daemon=self.name, status=status)

    def _notify(self, message: str) -> None:
        """Tell systemd; a broken ``NOTIFY_SOCKET`` is logged once and never stops the daemon
        (its work matters more than the notification; systemd acts on the silence)."""
        try:
            systemd.notify(message)
        except OSError as error:
            with self._notify_lock:
                first, self._notify_failed = not self._notify_failed, True
            if first:
                log.error(
                    "systemd_notify_failed", daemon=self.name, message=message, error=str(error)
                )

    def _start_server(self) -> None:
        try:
            self.server.start()
        except OSError as error:  # e.g. the port is taken: name the address in the fatal event
            address = f"{self.endpoint.listen}:{self.endpoint.port}"
            raise RuntimeError(f"cannot listen on {address}: {error.strerror}") from error

    def run(self, on_stop: Callable[[], None] | None = None) -> int:
        """Serve and schedule until SIGTERM or SIGINT; then stop within seconds."""

        def request_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("stop_requested", daemon=self.name, signal=signal.Signals(signum).name)
            self.stopping.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        self._start_server()
        interval = systemd.watchdog_interval()
        if interval is not None:
            self.every(interval, self._watchdog, "systemd_watchdog")
        self.scheduler.start()
        self._notify("READY=1")
        log.info("daemon_started", daemon=self.name, port=self.server.port)
        self.stopping.wait()
        self._notify("STOPPING=1")
        self.scheduler.shutdown(wait=False)
        if on_stop is not None:
            on_stop()
        self.server.stop()
        log.info("daemon_stopped", daemon=self.name)
        return 0
