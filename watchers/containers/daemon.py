"""``hubkeeper export-containers``: the container exporter as a daemon."""

from __future__ import annotations

import argparse

from hubkeeper.config import Config
from hubkeeper.daemon import Daemon
from hubkeeper.log import get_logger
from hubkeeper.watchers.containers.cgroup import raise_open_file_limit
from hubkeeper.watchers.containers.exporter import ContainerExporter

log = get_logger(__name__)


def export_containers(config: Config, _args: argparse.Namespace) -> int:
    """Run the exporter until SIGTERM."""
    exporter = ContainerExporter(config)
    section = config.containers
    raise_open_file_limit()  # cgroup files stay open between scrapes
    daemon = Daemon(
        "containers",
        section.endpoint,
        exporter.registry,
        exporter.health,
        {"/prtg/": exporter.prtg_route},
        exporter.render_metrics,
    )
    exporter.discovery.resync()  # before the endpoint answers, so the first scrape is complete
    daemon.every(section.resync_seconds, exporter.discovery.resync, "resync")
    if exporter.reconciler is not None:
        daemon.every(section.reconcile_seconds, exporter.reconcile, "reconcile")
    else:
        log.info("reconciliation_off", reason="reconcile = off or no hub token")
    if exporter.indexer is not None:
        exporter.indexer.schedule(
            daemon, section.snapshot_interval, exporter.snapshot_documents, "snapshot"
        )
    exporter.discovery.start()
    return daemon.run(on_stop=exporter.close)
