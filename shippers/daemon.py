"""``hubkeeper ship-logs``: the log shipper as a daemon (or, with ``--once``, the documents
printed for a look)."""

from __future__ import annotations

import argparse
import logging
import sys

from hubkeeper.config import Config
from hubkeeper.daemon import Daemon
from hubkeeper.shippers.documents import DocumentIndexer
from hubkeeper.shippers.shipper import Shipper, collect_less


def _sync_transport_only() -> None:
    """Import the Elasticsearch client's transport without aiohttp: elastic_transport
    imports it, when installed, for its asyncio node, and that import was 0.14 of the 0.46
    CPU s ship-logs spent importing; the shipper's client is synchronous (urllib3). Only
    in this process, and only if nothing imported either yet; aiohttp itself stays
    importable."""
    if "elastic_transport" in sys.modules or "aiohttp" in sys.modules:
        return
    sys.modules["aiohttp"] = None  # type: ignore[assignment]  # its import raises ImportError
    try:
        import elastic_transport  # noqa: F401
    finally:
        del sys.modules["aiohttp"]


def ship_logs(config: Config, args: argparse.Namespace) -> int:
    """Run the shipper until SIGTERM; with ``--once``, print the documents instead."""
    if getattr(args, "once", False):
        from hubkeeper.shippers.console import print_documents  # loads only in this mode

        return print_documents(config, args.output)
    _sync_transport_only()
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)  # a line per request
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
