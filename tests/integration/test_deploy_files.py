"""The production files: systemd units, the compose file, hubkeeper's own image."""

import subprocess
import sys
from pathlib import Path

import docker
import pytest

from hub.images import ensure_hubkeeper_image

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """Verified with their paths pointed at this checkout (verify checks the executables)."""
    units = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
    assert {u.name for u in units} >= {
        "jupyterhub@.service",
        "hubkeeper-watch-hubs.service",
        "hubkeeper-export-containers.service",
        "hubkeeper-ship-logs.service",
    }
    for unit in units:
        text = unit.read_text()
        text = text.replace("/opt/hubkeeper/venv", str(VENV)).replace(
            "/opt/hubkeeper/src", str(ROOT)
        )
        name = unit.name.replace("@.service", "@a.service")  # an instance of the template
        (tmp_path / name).write_text(text)
        assert "WatchdogSec=" in text or "@" in unit.name
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *sorted(map(str, tmp_path.glob("*.service")))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_compose_file_validates() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "deploy" / "compose.yaml"), "config", "--services"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {"export-containers", "ship-logs", "cull"}


@pytest.fixture(scope="module")
def image() -> str:
    return ensure_hubkeeper_image(docker.from_env(), progress=lambda _message: None)


def test_the_hubkeeper_image_runs_the_cli(image: str) -> None:
    client = docker.from_env()
    config = ROOT / "deploy" / "hubkeeper.example.toml"
    output = client.containers.run(
        image,
        ["check-config", "/etc/hubkeeper/hubkeeper.toml"],
        network_mode="host",
        remove=True,
        volumes={str(config): {"bind": "/etc/hubkeeper/hubkeeper.toml", "mode": "ro"}},
    )
    assert output.decode().strip() == "/etc/hubkeeper/hubkeeper.toml: ok"
