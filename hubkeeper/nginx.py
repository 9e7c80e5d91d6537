"""NGINX in front of the hubs: render the config, validate it, swap it in, reload.

A new config is written next to the live one, checked with ``nginx -t``, then renamed
over it; the previous file is kept as ``nginx.conf.previous`` for rollback.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import requests

from hubkeeper.config import HubInstance, NginxConfig

TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf.template"
GENERATION_HEADER = "X-Hubkeeper-Generation"


class NginxError(RuntimeError):
    pass


def render(template: str, values: dict[str, object]) -> str:
    """Fill ``{{name}}`` placeholders; an unknown or missing placeholder is an error."""
    missing = sorted(set(re.findall(r"{{(\w+)}}", template)) - set(values))
    if missing:
        raise NginxError(f"template placeholders without a value: {', '.join(missing)}")
    return re.sub(r"{{(\w+)}}", lambda m: str(values[m.group(1)]), template)


@dataclass
class Nginx:
    config: NginxConfig
    prefix: Path

    @property
    def conf_path(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def pid_path(self) -> Path:
        return self.prefix / "nginx.pid"

    def render(self, active: HubInstance, generation: int, template: Path = TEMPLATE) -> str:
        return render(
            template.read_text(encoding="utf-8"),
            {
                "prefix": self.prefix,
                "listen": self.config.listen,
                "public_port": self.config.public_port,
                "internal_port": self.config.internal_port,
                "active": active.name,
                "proxy_port": active.proxy_port,
                "hub_port": active.hub_port,
                "generation": generation,
            },
        )

    def _run(self, *args: str, conf: Path | None = None) -> subprocess.CompletedProcess[str]:
        command = [self.config.binary, "-p", str(self.prefix), "-c", str(conf or self.conf_path)]
        return subprocess.run([*command, *args], capture_output=True, text=True, timeout=30)

    def install(self, text: str) -> None:
        """Write ``text`` as the live config only if ``nginx -t`` accepts it."""
        for folder in ("logs", "tmp"):
            (self.prefix / folder).mkdir(parents=True, exist_ok=True)
        candidate = self.prefix / "nginx.conf.new"
        candidate.write_text(text, encoding="utf-8")
        result = self._run("-t", "-q", conf=candidate)
        if result.returncode != 0:
            candidate.unlink()
            raise NginxError(f"nginx -t rejected the new config: {result.stderr.strip()}")
        if self.conf_path.exists():
            os.replace(self.conf_path, self.prefix / "nginx.conf.previous")
        os.replace(candidate, self.conf_path)

    def start(self) -> int:
        result = self._run()
        if result.returncode != 0:
            raise NginxError(f"nginx did not start: {result.stderr.strip()}")
        return int(self.pid_path.read_text().strip())

    def reload(self) -> None:
        result = self._run("-s", "reload")
        if result.returncode != 0:
            raise NginxError(f"nginx reload failed: {result.stderr.strip()}")

    def served_generation(self, timeout: float = 2.0) -> int | None:
        """The generation NGINX actually serves, read from a response header."""
        url = f"http://{self.config.listen}:{self.config.public_port}/nginx-generation"
        try:
            response = requests.get(url, timeout=timeout, allow_redirects=False)
        except requests.RequestException:
            return None
        value = response.headers.get(GENERATION_HEADER)
        return int(value) if value and value.isdigit() else None
