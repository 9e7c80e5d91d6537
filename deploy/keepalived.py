"""keepalived on each NGINX host: the floating service address, moved by VRRP.

Both hosts start as BACKUP with ``nopreempt``: the one with the higher priority takes the
address when both start together, and a host that comes back never takes it back from the
one serving (no flapping). VRRP goes by unicast to the peers named in the config. A track
script asks the local NGINX every ``check_interval``; after ``check_fall`` failures the host
goes to FAULT and gives the address up. On taking the address keepalived sends gratuitous
ARP, so neighbours' caches follow at once.

keepalived is a host daemon configured at deployment, like NGINX's unit: no daemon of
hubkeeper needs this module at run time, so it lives in deploy/. The config is written
beside the live one, checked with ``keepalived --config-test``, then renamed over it
(``hubkeeper keepalived-config --out /etc/keepalived`` on each NGINX host).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hubkeeper.config import Config, ConfigError, KeepalivedConfig
from hubkeeper.files import fsync_dir, write_atomically

INSTANCE = "hubkeeper"
SCRIPT = "nginx_answers"


class KeepalivedError(RuntimeError):
    pass


def _seconds(value: float) -> str:
    return f"{value:g}"


def render(section: KeepalivedConfig, curl: str | None = None) -> str:
    """The keepalived.conf of one NGINX host; ``curl`` defaults to the one on PATH."""
    problems = []
    if section.address is None:
        problems.append("keepalived.address: not set, expected the floating address (CIDR)")
    if not section.peers:
        problems.append("keepalived.peers: empty, expected the other NGINX host's address")
    if problems:
        raise ConfigError(problems)
    curl = curl or shutil.which("curl")
    if curl is None:
        raise KeepalivedError("keepalived.check_url: curl, which asks NGINX, is not installed")
    # no --fail: any HTTP answer means NGINX runs; a 502 of a hub that is down must not
    # make both NGINX hosts give the address up
    check = f"{curl} --silent --output /dev/null --max-time {_seconds(section.check_interval)}"
    source = f"    unicast_src_ip {section.source}\n" if section.source else ""
    peers = "".join(f"        {peer}\n" for peer in section.peers)
    return (
        "# keepalived for one NGINX host, rendered by hubkeeper from its [keepalived] section.\n"
        "global_defs {\n"
        "    script_user root\n"
        "    enable_script_security\n"
        "}\n"
        f"vrrp_script {SCRIPT} {{\n"
        f'    script "{check} {section.check_url}"\n'
        f"    interval {_seconds(section.check_interval)}\n"
        f"    timeout {_seconds(section.check_interval)}\n"
        f"    fall {section.check_fall}\n"
        f"    rise {section.check_rise}\n"
        "}\n"
        f"vrrp_instance {INSTANCE} {{\n"
        "    state BACKUP\n"
        "    nopreempt\n"
        ""
        f"    interface {section.interface}\n"
        f"    virtual_router_id {section.virtual_router_id}\n"
        f"    priority {section.priority}\n"
        f"    advert_int {_seconds(section.advert_interval)}\n"
        f"{source}"
        "    unicast_peer {\n"
        f"{peers}"
        "    }\n"
        "    virtual_ipaddress {\n"
        f"        {section.address} dev {section.interface}\n"
        "    }\n"
        "    track_script {\n"
        f"        {SCRIPT}\n"
        "    }\n"
        "}\n"
    )


@dataclass
class Keepalived:
    """One keepalived with its config and pid files under ``workdir``."""

    section: KeepalivedConfig
    workdir: Path

    @property
    def conf_path(self) -> Path:
        return self.workdir / "keepalived.conf"

    def pid_path(self, process: str) -> Path:
        """``process``: ``keepalived`` (the parent), ``vrrp`` or ``checkers``."""
        return self.workdir / f"{process}.pid"

    def validate(self, text: str) -> Path:
        """Write ``text`` beside the live config and check it with ``keepalived -t``."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        candidate = self.workdir / "keepalived.conf.new"
        write_atomically(candidate, text.encode())
        result = subprocess.run(
            [self.section.binary, "--config-test", "--use-file", str(candidate)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode != 0:
            candidate.unlink()
            problems = (result.stderr.strip() or result.stdout.strip()).replace("\n", "; ")
            raise KeepalivedError(f"keepalived --config-test rejected the config: {problems}")
        return candidate

    def install(self, text: str) -> None:
        """Make ``text`` the live config if ``keepalived -t`` accepts it."""
        candidate = self.validate(text)
        os.replace(candidate, self.conf_path)
        fsync_dir(self.workdir)

    def command(self) -> list[str]:
        """keepalived in the foreground, VRRP only, logging to stderr, its own pid files."""
        return [
            self.section.binary,
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--no-syslog",
            "--vrrp",
            f"--use-file={self.conf_path}",
            f"--pid={self.pid_path('keepalived')}",
            f"--vrrp_pid={self.pid_path('vrrp')}",
            f"--checkers_pid={self.pid_path('checkers')}",
        ]

    def pids(self) -> list[int]:
        """The PIDs in its pid files (parent first) of keepalived processes still there."""
        found = []
        for process in ("keepalived", "vrrp"):
            try:
                pid = int(self.pid_path(process).read_text().strip())
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except (FileNotFoundError, ValueError):
                continue
            if name == "keepalived":  # not a PID the system gave another process since
                found.append(pid)
        return found

    def kill(self) -> None:
        """SIGKILL the parent and its VRRP child by PID: no goodbye advert, the address
        stays configured (as when the host dies)."""
        for pid in self.pids():
            os.kill(pid, signal.SIGKILL)


def write_command(config: Config, args: argparse.Namespace) -> int:
    """``hubkeeper keepalived-config --config FILE --out DIR``: DIR/keepalived.conf, checked."""
    keepalived = Keepalived(config.keepalived, Path(args.out))
    keepalived.install(render(config.keepalived))
    print(f"wrote {keepalived.conf_path} (keepalived --config-test: ok)")
    return 0
