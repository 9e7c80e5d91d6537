"""Running a hub instance's configured commands (start, stop, warm, retire) on this host."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from hubkeeper.log import get_logger

log = get_logger(__name__)
HUB_ACTIONS = ("start", "stop", "warm", "retire")


def run_command(argv: list[str], timeout: float, what: str, config_path: Path) -> bool:
    """Run one of an instance's commands; False when it could not run or failed."""
    if not argv:
        log.warning("no_command_configured", action=what)
        return True
    env = {**os.environ, "HUBKEEPER_CONFIG": str(config_path)}
    try:
        result = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        log.error("command_failed", action=what, error=type(error).__name__)
        return False
    if result.returncode != 0:
        log.error(
            "command_failed", action=what, returncode=result.returncode, stderr=result.stderr[-500:]
        )
    return result.returncode == 0
