"""The core (hubkeeper/) never imports a daemon at import time: each daemon loads its own
dependencies only when its command runs, and the core stays usable without them."""

import subprocess
import sys

DAEMON_PACKAGES = ("watchers", "shippers", "dashboards", "alerts")

PROBE = f"""
import importlib, pkgutil, sys
import hubkeeper
for module in pkgutil.iter_modules(hubkeeper.__path__):
    if module.name != "__main__":
        importlib.import_module("hubkeeper." + module.name)
print(" ".join(sorted(m for m in sys.modules if m.startswith("hubkeeper."))))
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in {DAEMON_PACKAGES!r})))
"""


def test_the_core_imports_no_daemon() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    core, daemons = done.stdout.split("\n")[:2]
    assert {"hubkeeper.cli", "hubkeeper.daemon", "hubkeeper.status"} <= set(core.split())
    assert daemons.split() == []
