"""The production files: systemd units, the compose file, hubkeeper's own image."""

import os
import subprocess
import sys
from pathlib import Path

import docker
import pytest
import requests

from hubkeeper.deploy.stack import free_ports, to_toml, wait_for
from hubkeeper.hub.images import ensure_hubkeeper_image

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent


def verify_units(folder: Path) -> None:
    """``systemd-analyze verify`` on every unit in ``folder`` (the template as an instance),
    which also checks that each unit's executables exist."""
    units = sorted(folder.glob("*.service"))
    assert {u.name for u in units} >= {
        "jupyterhub@.service",
        "jupyterhub-proxy@.service",
        "hubkeeper-watch-hubs.service",
        "hubkeeper-export-containers.service",
        "hubkeeper-ship-logs.service",
        "hubkeeper-watch-storage.service",
        "hubkeeper-agent.service",
    }
    for unit in units:
        assert "WatchdogSec=" in unit.read_text() or "@" in unit.name
        if "@." in unit.name:
            unit.rename(unit.with_name(unit.name.replace("@.service", "@a.service")))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *sorted(map(str, folder.glob("*.service")))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_installed_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """The units as ``hubkeeper install-files`` writes them for this checkout's venv."""
    done = subprocess.run(
        [str(VENV / "bin" / "hubkeeper"), "install-files", str(tmp_path)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert len(done.stdout.split()) == 9  # seven units, the compose file, the example config
    text = (tmp_path / "systemd" / "jupyterhub@.service").read_text()
    assert f"-f {ROOT / 'hub' / 'jupyterhub_config.py'}" in text and "/opt/" not in text
    assert "hubkeeper.hub.standby --wait" in text
    verify_units(tmp_path / "systemd")


def test_compose_file_validates() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "deploy" / "compose.yaml"), "config", "--services"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {"export-containers", "ship-logs", "cull", "watch-storage"}


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


def test_the_proxy_units_command_runs_the_instances_proxy_with_its_token(tmp_path: Path) -> None:
    """``python -m hubkeeper.hub.proxy NAME`` (jupyterhub-proxy@.service) becomes the proxy."""
    proxy, api, hub = free_ports(3)
    (tmp_path / "proxy_token").write_text("s3cret-proxy-token\n")
    config = tmp_path / "hubkeeper.toml"
    config.write_text(
        to_toml(
            {
                "jupyterhub": {
                    "proxy_token_file": "proxy_token",
                    "instances": [
                        {"name": "b", "proxy_port": proxy, "proxy_api_port": api, "hub_port": hub}
                    ],
                }
            }
        )
    )
    env = {**os.environ, "HUBKEEPER_CONFIG": str(config)}
    process = subprocess.Popen([sys.executable, "-m", "hubkeeper.hub.proxy", "b"], env=env)
    try:
        url = f"http://127.0.0.1:{api}/api/routes"

        def answers(token: str) -> int | None:
            try:
                headers = {"Authorization": f"token {token}"}
                return requests.get(url, headers=headers, timeout=1).status_code
            except requests.RequestException:
                return None

        wait_for(lambda: answers("s3cret-proxy-token") == 200, 30, "the proxy's API")
        assert answers("wrong") == 403
        assert "configurable-http-proxy" in Path(f"/proc/{process.pid}/cmdline").read_text()
    finally:
        process.kill()
        process.wait(10)
