"""Wiring of ``hubkeeper watch-storage``: one per Docker node, until SIGTERM."""

from __future__ import annotations

import argparse
import json
import socket
import time

from prometheus_client import CollectorRegistry

from hubkeeper import prtg
from hubkeeper.config import Config
from hubkeeper.daemon import Daemon
from hubkeeper.endpoint import Response
from hubkeeper.log import get_logger
from hubkeeper.shippers.documents import DocumentIndexer
from hubkeeper.watchers.storage.documents import snapshot_documents
from hubkeeper.watchers.storage.report import StorageCollector, sensor, status_document
from hubkeeper.watchers.storage.watcher import StorageWatcher

log = get_logger(__name__)


def watch_storage(config: Config, _args: argparse.Namespace) -> int:
    section = config.storage
    watcher = StorageWatcher(config)
    registry = CollectorRegistry()
    registry.register(StorageCollector(watcher.snapshot, section.top_users))

    def status(_path: str, _query: dict[str, list[str]]) -> Response:
        body = json.dumps(status_document(watcher.snapshot(), section.top_users))
        return 200, "application/json", body.encode("utf-8")

    def prtg_route(path: str, _query: dict[str, list[str]]) -> Response:
        if path.rstrip("/") != "/prtg/storage":
            return 404, "text/plain; charset=utf-8", b"not found\n"
        return prtg.response(sensor(watcher.snapshot(), section.top_users))

    daemon = Daemon(
        "storage", section.endpoint, registry, watcher.health,
        {"/status": status, "/prtg/": prtg_route},
    )  # fmt: skip
    for name, job in watcher.jobs().items():
        daemon.every(section.interval, job, name)
    if section.snapshot_interval:
        host = socket.gethostname()
        indexer = DocumentIndexer(config.shipper, registry, "hubkeeper_storage_snapshot")
        indexer.schedule(
            daemon,
            section.snapshot_interval,
            lambda: snapshot_documents(watcher.snapshot(), time.time(), host),
            "snapshot",
        )
    log.info(
        "storage_configured",
        node=watcher.node,
        mounts={m.name: m.path for m in section.mounts},
        nfs={s.name: f"{s.host}:{s.export}" for s in section.nfs},
        owncloud=section.owncloud.url,
        interval=section.interval,
        timeout=section.timeout,
    )
    return daemon.run(on_stop=watcher.close)
