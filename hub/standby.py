"""A JupyterHub instance that can be started in a fraction of a second: a warm standby.

``python -m hubkeeper.hub.standby --wait`` imports JupyterHub, the spawner and what they
load at start-up (the two seconds a cold start spends before it does anything), then waits
for SIGUSR1 and only then runs JupyterHub, which opens the database. Until the signal it
touches neither the database nor any port, so it may wait beside the active hub. Without
``--wait`` it starts at once. ``hubctl`` blocks SIGUSR1 before it executes this module, so
an early signal waits instead of killing the process; once started, the hub ignores it, so
a start command sent twice does no harm. The hub is JupyterHub with hubkeeper's one change
(:mod:`hubkeeper.hub.app`).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

#: Modules a JupyterHub start imports, loaded while the standby waits.
PRELOAD = (
    "jupyterhub.app",
    "jupyterhub.apihandlers",
    "jupyterhub.handlers",
    "jupyterhub.orm",
    "jupyterhub.proxy",
    "sqlalchemy.dialects.sqlite",
    "sqlalchemy.dialects.postgresql.psycopg",  # hubs on PostgreSQL (hub/settings.py)
    "psycopg",
    "hubkeeper.hub.settings",
    "hubkeeper.hub.spawner",
    "hubkeeper.hub.app",
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hubkeeper.hub.standby", description=__doc__)
    parser.add_argument("--wait", action="store_true", help="wait for SIGUSR1 before starting")
    parser.add_argument("hub_args", nargs=argparse.REMAINDER, help="JupyterHub's arguments")
    args = parser.parse_args(argv)
    if args.wait:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    for module in PRELOAD:
        importlib.import_module(module)
    if args.wait:
        signal.sigwait({signal.SIGUSR1})
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # a second start signal changes nothing
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
    from hubkeeper.hub.app import Hub

    Hub.launch_instance([arg for arg in args.hub_args if arg != "--"])


if __name__ == "__main__":
    sys.exit(main())
