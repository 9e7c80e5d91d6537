"""``hubkeeper watch-hubs``, ``hubkeeper failover --to NAME`` and ``hubkeeper status``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from hubkeeper import prtg
from hubkeeper.config import Config
from hubkeeper.daemon import Daemon
from hubkeeper.endpoint import Response
from hubkeeper.log import get_logger
from hubkeeper.watchers.hubs.state import StateStore
from hubkeeper.watchers.hubs.watcher import HubWatcher

log = get_logger(__name__)
JSON = "application/json"


def watch_hubs(config: Config, args: argparse.Namespace) -> int:
    """Act only while holding the lock: a second watcher waits as a hot spare."""
    store = StateStore(Path(config.watcher.state_file))
    lock = store.try_lock()
    while lock is None:
        log.info("standing_by", reason="another watcher holds the lock", lock=str(store.lock_path))
        time.sleep(config.watcher.interval)
        lock = store.try_lock()
    registry = CollectorRegistry()
    watcher = HubWatcher(config, Path(args.config), registry)
    watcher.resume()

    def status(_path: str, _query: dict[str, list[str]]) -> Response:
        return 200, JSON, json.dumps(watcher.status()).encode()

    daemon = Daemon(
        "watch-hubs",
        config.watcher.endpoint,
        registry,
        health=watcher.healthz,
        routes={"/status": status, "/prtg/hubs": lambda *_: prtg.response(watcher.prtg())},
    )
    daemon.every(config.watcher.interval, watcher.cycle, "cycle")
    if watcher.canary is not None:
        daemon.every(config.watcher.canary_interval, watcher.run_canary, "spawn_canary")
    try:
        return daemon.run()
    finally:
        lock.close()  # closing the file releases the flock


def failover(config: Config, args: argparse.Namespace) -> int:
    """A planned switch: handed to the running watcher, or done here if none runs."""
    store = StateStore(Path(config.watcher.state_file))
    if args.to not in {hub.name for hub in config.jupyterhub.instances}:
        print(f"failover: no hub named {args.to!r} in [[jupyterhub.instances]]")
        return 2
    lock = store.try_lock()
    if lock is None:
        submitted = time.time()
        store.request_switch(args.to)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            state = store.load()
            outcome = state.last_request if state is not None else None
            if state is not None and outcome and outcome["at"] >= submitted:
                result = "done" if outcome["ok"] else "failed"
                print(
                    f"failover: {result}; active hub {state.active} (generation {state.generation})"
                )
                return 0 if outcome["ok"] else 1
            time.sleep(0.2)
        print(f"failover: the watcher did not answer the request within {args.timeout:.0f}s")
        return 1
    try:
        watcher = HubWatcher(config, Path(args.config), CollectorRegistry())
        watcher.state.frozen = False  # an operator's switch lifts a freeze, also to itself
        if watcher.state.active == args.to:
            watcher.store.save(watcher.state)
            print(f"failover: {args.to} is already active")
            return 0
        ok = watcher.failover(watcher.state.active, args.to, "planned")
        print(f"failover: {'done' if ok else 'failed'}; active hub {watcher.state.active}")
        return 0 if ok else 1
    finally:
        lock.close()  # closing the file releases the flock
