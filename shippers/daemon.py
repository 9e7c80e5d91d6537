"""``hubkeeper ship-logs``: the log shipper as a daemon (or, with ``--once``, the documents
printed for a look)."""

from __future__ import annotations

import argparse

from hubkeeper.config import Config
from hubkeeper.daemon import Daemon
from hubkeeper.shippers.documents import DocumentIndexer
from hubkeeper.shippers.shipper import Shipper, collect_less


def ship_logs(config: Config, args: argparse.Namespace) -> int:
    """Run the shipper until SIGTERM; with ``--once``, print the documents instead."""
    if getattr(args, "once", False):
        from hubkeeper.shippers.console import print_documents  # loads only in this mode

        return print_documents(config, args.output)
    shipper = Shipper(config)
    daemon = Daemon(
        "shipper",
        config.shipper.endpoint,
        shipper.metrics_registry,
        shipper.health,
        {"/prtg/": shipper.prtg_route},
    )
    daemon.every(3600, shipper.retention, "retention")
    if config.shipper.status_interval:
        section = config.shipper
        status = DocumentIndexer(section, shipper.metrics_registry, "hubkeeper_shipper_status")
        status.schedule(daemon, section.status_interval, lambda: [shipper.status()], "status")
    collect_less()
    shipper.start()
    return daemon.run(on_stop=shipper.stop)
