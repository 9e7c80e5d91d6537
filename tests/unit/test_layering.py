"""The core (hubkeeper/) never imports a daemon at import time: each daemon loads its own
dependencies only when its command runs, and the core stays usable without them."""

import re
import subprocess
import sys
from pathlib import Path

DAEMON_PACKAGES = ("watchers", "shippers", "dashboards", "alerts")

PROBE = f"""
import importlib, pkgutil, sys
import hubkeeper
daemons = {DAEMON_PACKAGES!r}
for module in pkgutil.iter_modules(hubkeeper.__path__):
    if module.name != "__main__" and module.name not in daemons:
        importlib.import_module("hubkeeper." + module.name)
print(" ".join(sorted(m for m in sys.modules if m.startswith("hubkeeper."))))
print(" ".join(sorted(m for m in sys.modules if m.startswith("hubkeeper.")
                      and m.split(".")[1] in daemons)))
"""


def test_the_core_imports_no_daemon() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    core, daemons = done.stdout.split("\n")[:2]
    assert {"hubkeeper.cli", "hubkeeper.daemon", "hubkeeper.status"} <= set(core.split())
    assert daemons.split() == []


def test_every_daemon_command_starts_in_its_folders_daemon_module() -> None:
    """One skeleton: a daemon's entry function lives in ``<folder>/daemon.py``."""
    source = (Path(__file__).resolve().parents[2] / "hubkeeper" / "cli.py").read_text()
    entries = re.findall(r'"hubkeeper\.((?:watchers|shippers)\.[\w.]+):(\w+)"', source)
    assert {function for _module, function in entries} >= {
        "watch_hubs", "failover", "export_containers", "ship_logs", "cull",
    }  # fmt: skip
    assert [module for module, _function in entries if not module.endswith(".daemon")] == []
