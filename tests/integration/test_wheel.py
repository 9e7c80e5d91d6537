"""hubkeeper installed from its wheel, without the repository: a fresh virtualenv, run from
a folder outside the checkout, imports every module and runs the commands an operator
starts with (``check-config``, ``alerts render``, ``install-files`` and the units'
``systemd-analyze verify``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.integration.test_deploy_files import verify_units

pytestmark = pytest.mark.beside  # needs no Docker engine: runs beside the main lane

ROOT = Path(__file__).resolve().parents[2]
NOT_SOURCE = (".git", ".venv*", "build", "target", "*.egg-info", "__pycache__", ".*cache", "*.so")
# Modules that need the ``hub`` extra (JupyterHub, DockerSpawner), not installed here.
NEEDS_HUB_EXTRA = ("jupyterhub", "dockerspawner")
# Files run, not imported: the CLI's ``python -m`` entry, the config JupyterHub executes.
SCRIPTS = ("hubkeeper.__main__", "hubkeeper.hub.jupyterhub_config")
IMPORT_ALL = """
import importlib, pkgutil, hubkeeper
failed = []
for module in pkgutil.walk_packages(hubkeeper.__path__, "hubkeeper."):
    if module.name in {scripts!r}:
        continue
    try:
        importlib.import_module(module.name)
    except ModuleNotFoundError as error:
        if error.name.split(".")[0] not in {needs!r}:
            failed.append(f"{{module.name}}: {{error}}")
print(hubkeeper.__file__)
print("\\n".join(failed))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel built from this checkout (dependencies from the
    package index, as an operator's pip would fetch them)."""
    folder = tmp_path_factory.mktemp("wheel")
    # built from a copy: setuptools writes build/ and *.egg-info into the tree it builds,
    # where .ci/lowest's editable install may be writing at the same time
    source = folder / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
         "--no-deps", "-w", str(folder / "dist"), str(source)],
        check=True, timeout=600,
    )  # fmt: skip
    (wheel,) = (folder / "dist").glob("hubkeeper-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert {name for name in top if not name.endswith(".dist-info")} == {"hubkeeper"}
    assert "hubkeeper/deploy/systemd/jupyterhub@.service" in names
    assert "hubkeeper/hub/jupyterhub_config.py" in names
    assert any(name.startswith("hubkeeper/shippers/_native.") for name in names)  # Rust, built
    venv.create(folder / "venv", with_pip=True)
    python = folder / "venv" / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         str(wheel)],
        check=True, timeout=900,
    )  # fmt: skip
    return folder


def run(installed: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """A command of the installed venv, run outside the checkout with a clean environment."""
    environment = {"PATH": f"{installed / 'venv' / 'bin'}:/usr/bin:/bin", "HOME": str(installed)}
    return subprocess.run(
        command, cwd=installed, env=environment, capture_output=True, text=True, timeout=120
    )


def test_every_module_imports_from_the_wheel(installed: Path) -> None:
    python = str(installed / "venv" / "bin" / "python")
    done = run(installed, python, "-c", IMPORT_ALL.format(needs=NEEDS_HUB_EXTRA, scripts=SCRIPTS))
    assert done.returncode == 0, done.stderr
    where, failed = done.stdout.split("\n", 1)
    assert where.startswith(str(installed / "venv")), where  # not the checkout
    assert failed.strip() == ""


def test_the_operators_first_commands_run_from_the_wheel(installed: Path) -> None:
    hubkeeper = str(installed / "venv" / "bin" / "hubkeeper")
    files = installed / "files"
    done = run(installed, hubkeeper, "install-files", str(files))
    assert done.returncode == 0, done.stderr
    example = files / "hubkeeper.example.toml"
    done = run(installed, hubkeeper, "check-config", str(example))
    assert (done.returncode, done.stdout.strip()) == (0, f"{example}: ok"), done.stderr
    done = run(installed, hubkeeper, "alerts", "render", "--config", str(example),
               "--out", str(installed / "alerting"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (installed / "alerting" / "prometheus.yml").is_file()
    assert run(installed, hubkeeper, "--version").stdout.startswith("hubkeeper ")
    unit = (files / "systemd" / "jupyterhub@.service").read_text()
    assert str(installed / "venv") in unit and str(ROOT) not in unit
    verify_units(files / "systemd")
