"""``hubkeeper install-files DEST``: the production files, for the installation that runs it.

The files in ``deploy/`` (systemd units, the compose file, the example config) name a
reference installation: a virtualenv in ``/opt/hubkeeper/venv`` and the config in
``/etc/hubkeeper/hubkeeper.toml``. This command writes them with the paths of the
installation it runs from (a wheel installed anywhere, or a source checkout): this
Python, this ``hubkeeper`` script, the installed ``jupyterhub_config.py``. Each file is
written beside its target and renamed over it, so a failed run leaves no half file.
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
from importlib.resources import files
from pathlib import Path

from hubkeeper.files import write_atomically

REFERENCE_VENV = "/opt/hubkeeper/venv"
REFERENCE_HUB_CONFIG = "/opt/hubkeeper/src/hub/jupyterhub_config.py"
REFERENCE_CONFIG = "/etc/hubkeeper/hubkeeper.toml"
DEPLOY = files("hubkeeper.deploy")


def hub_config_path() -> Path:
    """The installed ``jupyterhub_config.py`` (the hub's ``-f``)."""
    return Path(str(files("hubkeeper.hub") / "jupyterhub_config.py"))


def installation_paths(config: str) -> dict[str, str]:
    """What each reference path becomes here (longest first: a prefix of another)."""
    scripts = Path(sysconfig.get_path("scripts"))
    return {
        REFERENCE_HUB_CONFIG: str(hub_config_path()),
        f"{REFERENCE_VENV}/bin/hubkeeper": str(scripts / "hubkeeper"),
        f"{REFERENCE_VENV}/bin/python": sys.executable,
        REFERENCE_CONFIG: config,
    }


def rendered(text: str, paths: dict[str, str]) -> str:
    for reference, actual in paths.items():
        text = text.replace(reference, actual)
    return text


def production_files(config: str) -> dict[str, str]:
    """Relative name -> content: the systemd units with this installation's paths, the
    compose file (its paths are inside hubkeeper's image) and the example config."""
    paths = installation_paths(config)
    units = sorted((DEPLOY / "systemd").iterdir(), key=lambda unit: unit.name)
    written = {
        f"systemd/{unit.name}": rendered(unit.read_text(encoding="utf-8"), paths)
        for unit in units
        if unit.name.endswith(".service")
    }
    for name in ("compose.yaml", "hubkeeper.example.toml"):
        written[name] = (DEPLOY / name).read_text(encoding="utf-8")
    return written


def install_files(args: argparse.Namespace) -> int:
    """Write the production files under ``args.dest``; print what was written."""
    config = str(Path(args.config_path).absolute()) if args.config_path else REFERENCE_CONFIG
    for name, text in production_files(config).items():
        target = Path(args.dest) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, text.encode("utf-8"))
        print(target)
    return 0
