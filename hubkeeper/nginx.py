"""NGINX in front of the hubs: render the config, validate it, swap it in, reload.

A new config is written next to the live one, checked with ``nginx -t``, then renamed
over it; the previous file is kept as ``nginx.conf.previous`` for rollback. A live file that
``nginx -t`` refuses (edited by hand) is replaced by :meth:`Nginx.repair`, which keeps it as
``nginx.conf.rejected``.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import requests

from hubkeeper.config import HubInstance, NginxConfig
from hubkeeper.files import write_atomically

TEMPLATE = Path(str(files("hubkeeper.deploy") / "nginx.conf.template"))
GENERATION_HEADER = "X-Hubkeeper-Generation"
CONFIRMATIONS = 3  # answers in a row with the new generation before a switch counts


class NginxError(RuntimeError):
    pass


def _listens(text: str) -> set[tuple[str, int]]:
    return {
        (host or "0.0.0.0", int(port_number))
        for host, port_number in re.findall(r"^\s*listen\s+(?:([\d.]+):)?(\d+)", text, re.M)
    }


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

    @property
    def template(self) -> Path:
        return Path(self.config.template) if self.config.template else TEMPLATE

    def render(self, active: HubInstance, generation: int) -> str:
        return render(
            self.template.read_text(encoding="utf-8"),
            {
                "prefix": self.prefix,
                "listen": self.config.listen,
                "public_port": self.config.public_port,
                "internal_port": self.config.internal_port,
                "active": active.name,
                "host": active.host,  # a hub on another host is reached at its address
                "proxy_port": active.proxy_port,
                "hub_port": active.hub_port,
                "generation": generation,
            },
        )

    def _run(self, *args: str, conf: Path | None = None) -> subprocess.CompletedProcess[str]:
        command = [self.config.binary, "-p", str(self.prefix), "-c", str(conf or self.conf_path)]
        return subprocess.run([*command, *args], capture_output=True, text=True, timeout=30)

    @property
    def previous_path(self) -> Path:
        return self.prefix / "nginx.conf.previous"

    @property
    def rejected_path(self) -> Path:
        return self.prefix / "nginx.conf.rejected"

    def live_error(self) -> str | None:
        """Why ``nginx -t`` refuses the live config file (its first line), None if it passes.

        NGINX keeps serving its old config when a reload finds the file broken, so only
        this tells that the next restart (a reboot, an upgrade) would fail."""
        result = self._run("-t", "-q")
        if result.returncode == 0:
            return None
        lines = result.stderr.strip().splitlines()
        if not lines:
            return f"nginx -t exited with {result.returncode}"
        # without its time and process ids: the same error reads the same at every check
        return re.sub(r"^[\d/]+ [\d:]+ (\[\w+\]) \d+#\d+: ", r"\1 ", lines[0])

    def check_live(self, active: HubInstance, generation: int) -> tuple[str | None, bool]:
        """Why ``nginx -t`` refuses the live file (None: it passes), and whether the file is
        the config rendered for ``active`` at ``generation``."""
        try:
            text = self.conf_path.read_text(encoding="utf-8")
        except OSError:
            text = None
        return self.live_error(), text == self.render(active, generation)

    def validate(self, text: str) -> Path:
        """Write ``text`` beside the live config and check it with ``nginx -t``."""
        for folder in ("logs", "tmp"):
            (self.prefix / folder).mkdir(parents=True, exist_ok=True)
        candidate = self.prefix / "nginx.conf.new"
        candidate.write_text(text, encoding="utf-8")
        result = self._run("-t", "-q", conf=candidate)
        if result.returncode != 0:
            candidate.unlink()
            raise NginxError(f"nginx -t rejected the new config: {result.stderr.strip()}")
        return candidate

    def check_new_listens(self, text: str) -> None:
        """Fail if ``text`` listens on an address the live config does not and cannot bind.

        ``nginx -t`` does not bind, and a reload that cannot bind keeps the old config
        silently; checking first means nothing is stopped for a switch that cannot work.
        """
        live = self.conf_path.read_text(encoding="utf-8") if self.conf_path.exists() else ""
        for host, port_number in sorted(_listens(text) - _listens(live)):
            with socket.socket() as probe:
                try:
                    probe.bind((host, port_number))
                except OSError as error:
                    raise NginxError(
                        f"the new config listens on {host}:{port_number}, which cannot be bound"
                        f" ({error.strerror})"
                    ) from None

    def install(self, text: str) -> None:
        """Make ``text`` the live config if ``nginx -t`` accepts it, keeping the old one."""
        candidate = self.validate(text)
        if self.conf_path.exists():
            os.replace(self.conf_path, self.previous_path)
        os.replace(candidate, self.conf_path)

    def live(self) -> tuple[str, int] | None:
        """The active hub and generation of the live config file, if it has them."""
        try:
            text = self.conf_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        active = re.search(r"^\s*# active hub: (\S+)", text, re.M)
        generation = re.search(rf"add_header {GENERATION_HEADER} (\d+)", text)
        if active is None or generation is None:
            return None
        return active.group(1), int(generation.group(1))

    def switch(self, active: HubInstance, generation: int, confirm_timeout: float) -> float:
        """Point NGINX at ``active``; confirmed through NGINX itself, rolled back on failure.
        Returns the seconds the confirmation took.

        ``nginx -s reload`` succeeds even when the new config cannot take effect (a port it
        cannot bind, for one): the master keeps the old config silently. Only the generation
        header served afterwards tells.
        """
        self.install(self.render(active, generation))
        try:
            self.reload()
            reloaded = time.monotonic()
            deadline = reloaded + confirm_timeout
            in_a_row = 0  # old workers may still take a connection or two after a reload
            while in_a_row < CONFIRMATIONS:
                # short: a connection an old worker still took may hang on the old upstream
                served = self.served_generation(timeout=0.3)
                in_a_row = in_a_row + 1 if served == generation else 0
                if in_a_row < CONFIRMATIONS and time.monotonic() > deadline:
                    raise NginxError(f"NGINX still does not serve generation {generation}")
                if in_a_row < CONFIRMATIONS:
                    time.sleep(0.05)
        except NginxError:
            self.rollback()
            raise
        return time.monotonic() - reloaded

    def repair(self, active: HubInstance, generation: int, confirm_timeout: float) -> str:
        """Replace a live config NGINX refuses by the one it serves (``active`` at
        ``generation``) as :meth:`switch` does, keeping the refused file as
        ``nginx.conf.rejected``, whose path is returned."""
        if self.conf_path.exists():
            write_atomically(self.rejected_path, self.conf_path.read_bytes())
        self.switch(active, generation, confirm_timeout)
        return str(self.rejected_path)

    def rollback(self) -> None:
        """Put the previous config back and reload it."""
        os.replace(self.previous_path, self.conf_path)
        self.reload()

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
