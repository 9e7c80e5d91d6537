"""Wiring of ``hubkeeper cull``: the daemon (endpoint, sampling and cull jobs) or ``--once``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from hubkeeper import prtg
from hubkeeper.cli import EXIT_LOCKED
from hubkeeper.config import Config
from hubkeeper.daemon import Daemon
from hubkeeper.endpoint import Response
from hubkeeper.log import get_logger
from hubkeeper.watchers.culler.culler import Culler
from hubkeeper.watchers.culler.report import sensor

log = get_logger(__name__)

EXIT_FAILED = 1  # the hub could not be read; nothing was done


def run_once(culler: Culler) -> int:
    """One cycle for cron: 0 done, 1 the hub could not be read, 75 another culler acts."""
    try:
        if not culler.acquire():
            log.warning("culler_lock_held", lock=str(culler.lock_path))
            return EXIT_LOCKED
        culler.check_scopes()
        report = culler.cycle()
    finally:
        culler.close()
    return 0 if report is not None and report.ok else EXIT_FAILED


def _exit_with_the_hub(daemon: Daemon, hub_pid: int) -> Callable[[], None]:
    """As a managed service: stop once the hub that started us is gone (a fenced hub is
    killed, and its services run in sessions of their own, so no signal reaches us)."""

    def check() -> None:
        if os.getppid() != hub_pid:
            log.warning("culler_hub_gone", hub_pid=hub_pid)
            daemon.stopping.set()

    return check


def cull(config: Config, args: argparse.Namespace) -> int:
    """Run the culler until SIGTERM, or one cycle with ``--once``."""
    culler = Culler(config, dry_run=args.dry_run)
    if args.once:
        return run_once(culler)
    section = culler.section

    def prtg_route(path: str, _query: dict[str, list[str]]) -> Response:
        if path.rstrip("/") != "/prtg/culler":
            return 404, "text/plain; charset=utf-8", b"not found\n"
        payload = sensor(culler.last, culler.acting, culler.last_cycle_age(), section.interval)
        return prtg.response(payload)

    daemon = Daemon(
        "culler", section.endpoint, culler.registry, culler.health, {"/prtg/": prtg_route}
    )
    if culler.activity is not None and section.busy_cpu_percent > 0:
        daemon.every(section.sample_every, culler.sample, "sample")
    daemon.every(section.interval, culler.cycle, "cull")
    if os.environ.get("JUPYTERHUB_SERVICE_NAME"):
        daemon.every(2.0, _exit_with_the_hub(daemon, os.getppid()), "hub-alive")
    culler.check_scopes()
    log.info(
        "culler_configured",
        hub=config.hub.url,
        interval=section.interval,
        timeout=section.timeout,
        dry_run=section.dry_run,
        busy_cpu_percent=section.busy_cpu_percent,
        orphans=section.orphans,
    )
    return daemon.run(on_stop=culler.close)
