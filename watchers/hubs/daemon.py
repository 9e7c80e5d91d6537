"""``hubkeeper watch-hubs``, ``hubkeeper failover --to NAME`` and ``hubkeeper agent``."""

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
from hubkeeper.watchers.hubs.agent import Agent
from hubkeeper.watchers.hubs.lease import LeaseKeeper, PostgresLeaseStore
from hubkeeper.watchers.hubs.state import SharedStateStore, StateStore, Store
from hubkeeper.watchers.hubs.watcher import HubWatcher

log = get_logger(__name__)
JSON = "application/json"


def shared_store(config: Config) -> tuple[SharedStateStore, LeaseKeeper]:
    """The lease and the state in PostgreSQL, for watchers on several hosts."""
    section = config.watcher
    database = PostgresLeaseStore(
        section.lease_database_url,
        section.lease_password,
        f"{config.jupyterhub.name}-hub-watcher",
        timeout=section.lease_ttl / 3,
    )
    keeper = LeaseKeeper(database, section.lease_ttl)
    return SharedStateStore(database, keeper), keeper


def store_of(config: Config) -> Store:
    if config.watcher.lease_database_url:
        return shared_store(config)[0]
    return StateStore(Path(config.watcher.state_file))


def watch_hubs(config: Config, args: argparse.Namespace) -> int:
    """On one machine, act only while holding the file lock: a second watcher waits as a
    hot spare. On several hosts, every watcher runs and the lease says which one acts."""
    section = config.watcher
    registry = CollectorRegistry()
    lock = None
    if section.lease_database_url:
        store, keeper = shared_store(config)
        watcher = HubWatcher(config, Path(args.config), registry, store, keeper)
    else:
        file_store = StateStore(Path(section.state_file))
        lock = file_store.try_lock()
        while lock is None:
            log.info(
                "standing_by",
                reason="another watcher holds the lock",
                lock=str(file_store.lock_path),
            )
            time.sleep(section.interval)
            lock = file_store.try_lock()
        keeper = None
        watcher = HubWatcher(config, Path(args.config), registry, file_store)
        watcher.take_over()

    def status(_path: str, _query: dict[str, list[str]]) -> Response:
        return 200, JSON, json.dumps(watcher.status()).encode()

    daemon = Daemon(
        "watch-hubs",
        section.endpoint,
        registry,
        health=watcher.healthz,
        routes={"/status": status, "/prtg/hubs": lambda *_: prtg.response(watcher.prtg())},
    )
    if keeper is not None:
        daemon.every(section.lease_ttl / 3, keeper.renew, "lease")
    daemon.every(section.interval, watcher.cycle, "cycle")
    if watcher.canary is not None:
        daemon.every(section.canary_interval, watcher.run_canary, "spawn_canary")
    try:
        return daemon.run(on_stop=keeper.release if keeper is not None else None)
    finally:
        if lock is not None:
            lock.close()  # closing the file releases the flock


def agent(config: Config, args: argparse.Namespace) -> int:
    """Run the leading watcher's actions on this host (hub commands, NGINX switches)."""
    host_agent = Agent(config, Path(args.config))
    daemon = Daemon(
        "agent",
        config.agent.endpoint,
        CollectorRegistry(),
        health=host_agent.healthz,
        routes={"/v1/nginx": host_agent.live},
        actions={"/v1/": host_agent.handle},
    )
    return daemon.run()


def failover(config: Config, args: argparse.Namespace) -> int:
    """A planned switch: handed to the running watcher, or done here if none runs."""
    store = store_of(config)
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
        watcher = HubWatcher(config, Path(args.config), CollectorRegistry(), store)
        watcher.take_over()
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
