"""Two NGINX hosts (network namespaces on a test bridge, deploy/netns.py) share a floating
service address moved by real keepalived (deploy/keepalived.py, VRRP by unicast): the
address follows a host that dies, and a host whose NGINX dies; a recovered host does not
take it back; the root namespace's ARP cache follows by keepalived's gratuitous ARP.

Takeover times are printed (run with -s); they are measured, not asserted (a generous
deadline only)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import requests

from hubkeeper.config import KeepalivedConfig
from hubkeeper.deploy.keepalived import Keepalived, KeepalivedError, render
from hubkeeper.deploy.netns import FLOATING_ADDRESS, SUBNET, TestNetwork, control_address, run
from hubkeeper.deploy.stack import wait_for
from hubkeeper.deploy.swarm import Swarm

PORT = 8080
TAKEOVER_DEADLINE = 20.0  # seconds; keepalived needs about 3.5 with adverts every second
NGINX_CONF = """worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen {floating}:{port};
        listen 127.0.0.1:{port};
        location / {{ return 200 "{name}\\n"; }}
    }}
}}
"""


@dataclass
class NginxHost:
    """One NGINX host: NGINX on the floating address (bound before the host holds it) and
    keepalived, both started in the host's namespace."""

    net: TestNetwork
    name: str
    address: str
    keepalived: Keepalived
    workdir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self) -> None:
        self.start_nginx()
        self.processes["keepalived"] = self.net.popen(
            self.name,
            self.keepalived.command(),
            stdout=(self.workdir / "keepalived.log").open("ab"),
            stderr=subprocess.STDOUT,
        )

    def start_nginx(self) -> None:
        prefix = self.workdir / "nginx"
        prefix.mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(prefix=prefix, floating=FLOATING_ADDRESS, port=PORT, name=self.name)
        )
        self.processes["nginx"] = self.net.popen(
            self.name, ["nginx", "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"]
        )
        url = f"http://127.0.0.1:{PORT}/"
        wait_for(lambda: self.answers(url), 10, f"NGINX on {self.name}")

    def answers(self, url: str) -> bool:
        done = self.net.run_in(self.name, "curl", "-s", "-m", "1", url, check=False)
        return done.stdout.strip() == self.name

    def kill_nginx(self) -> None:
        """SIGKILL NGINX's master and its worker (a worker outlives its killed master and
        keeps serving on the inherited sockets)."""
        master = self.processes.pop("nginx")
        children = Path(f"/proc/{master.pid}/task/{master.pid}/children").read_text().split()
        master.kill()
        master.wait(10)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)

    def die(self) -> None:
        """The host dies: its cable is pulled, keepalived and NGINX are SIGKILLed by PID."""
        self.net.cut(self.name)
        self.keepalived.kill()
        self.kill_nginx()
        self.processes.pop("keepalived").wait(10)

    def recover(self) -> None:
        """The host comes back as from a reboot: without the address it held, then its
        cable, NGINX and keepalived."""
        prefix = f"{FLOATING_ADDRESS}/{SUBNET.prefixlen}"
        self.net.run_in(self.name, "ip", "addr", "del", prefix, "dev", "eth0", check=False)
        self.net.restore(self.name)
        self.start()

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.processes.clear()

    def log(self) -> str:
        return (self.workdir / "keepalived.log").read_text(errors="replace")


@pytest.fixture
def hosts(swarm: Swarm, tmp_path: Path) -> Iterator[dict[str, NginxHost]]:
    names = {"hk-lb1": control_address(1), "hk-lb2": control_address(2)}
    section = KeepalivedConfig(
        address=f"{FLOATING_ADDRESS}/{SUBNET.prefixlen}",
        check_url=f"http://127.0.0.1:{PORT}/",
        virtual_router_id=113,
    )
    started: dict[str, NginxHost] = {}
    net = swarm.net  # the session's test network
    try:
        for number, (name, address) in enumerate(names.items()):
            net.add_host(name, address)
            net.sysctl(name, "net.ipv4.ip_nonlocal_bind", "1")
            own = replace(
                section,
                source=address,
                peers=[peer for other, peer in names.items() if other != name],
                priority=110 - 10 * number,  # hk-lb1 first when both start together
            )
            keepalived = Keepalived(own, tmp_path / name)
            keepalived.install(render(own))
            started[name] = NginxHost(net, name, address, keepalived, tmp_path / name)
        yield started
    finally:
        left = {}
        for host in started.values():
            host.stop()
            left[host.name] = net.pids(host.name)
            net.remove_host(host.name)  # kills what is left, deletes the namespace
        assert left == dict.fromkeys(started, []), "processes left after stopping"
        assert "hk-lb1" not in run("ip", "netns", "list").stdout
    assert "hk-lb" not in run("ip", "netns", "list").stdout


def holder(net: TestNetwork, hosts: dict[str, NginxHost]) -> str | None:
    """The live host (its keepalived running) that holds the floating address."""
    holding = [
        name
        for name, host in hosts.items()
        if "keepalived" in host.processes and net.holds(name, FLOATING_ADDRESS)
    ]
    assert len(holding) <= 1, f"the floating address on {holding} at once"
    return holding[0] if holding else None


def served_by() -> str:
    return requests.get(f"http://{FLOATING_ADDRESS}:{PORT}/", timeout=2).text.strip()


def takeover(
    net: TestNetwork, hosts: dict[str, NginxHost], to: str, since: float
) -> dict[str, float]:
    """Wait (without sending the floating address anything) until ``to`` holds it and the
    root namespace's ARP cache names ``to``'s MAC; then it must serve. Times in seconds."""
    mac = net.mac(to)
    wait_for(lambda: holder(net, hosts) == to, TAKEOVER_DEADLINE, f"{to} to take the address", 0.05)
    held = time.monotonic() - since
    wait_for(lambda: net.neighbour(FLOATING_ADDRESS) == mac, 10, "the ARP cache to follow", 0.05)
    cached = time.monotonic() - since
    assert served_by() == to
    return {
        "held": round(held, 2),
        "arp": round(cached, 2),
        "served": round(time.monotonic() - since, 2),
    }


def keepalived_config(config: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hubkeeper", "keepalived-config", "--config", str(config),
         "--out", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_keepalived_config_command_writes_only_what_keepalived_accepts(
    tmp_path: Path,
) -> None:
    config, out = tmp_path / "hubkeeper.toml", tmp_path / "keepalived"
    config.write_text('[keepalived]\naddress = "192.0.2.100/24"\npeers = ["192.0.2.12"]\n')
    done = keepalived_config(config, out)
    assert done.returncode == 0, done.stderr
    live = (out / "keepalived.conf").read_text()
    assert "nopreempt" in live
    assert "192.0.2.100/24 dev eth0" in live

    config.write_text('[keepalived]\npeers = ["192.0.2.12"]\n')
    done = keepalived_config(config, out)
    assert done.returncode == 2
    assert "keepalived.address: not set" in done.stderr

    keepalived = Keepalived(KeepalivedConfig(), out)  # what keepalived itself refuses
    broken = live.replace("priority 100", "priority 100\n    preempt_frobnicate 1")
    with pytest.raises(KeepalivedError, match="preempt_frobnicate"):
        keepalived.install(broken)
    assert (out / "keepalived.conf").read_text() == live
    assert sorted(p.name for p in out.iterdir()) == ["keepalived.conf"]


def test_the_floating_address_follows_a_dead_host_and_a_dead_nginx(
    hosts: dict[str, NginxHost],
) -> None:
    first, second = hosts["hk-lb1"], hosts["hk-lb2"]
    net = first.net
    started = time.monotonic()
    for host in hosts.values():
        host.start()
    # both start as BACKUP; the higher priority takes the address after about 3 adverts
    wait_for(lambda: holder(net, hosts) == first.name, TAKEOVER_DEADLINE, "a first holder")
    net.reachable(FLOATING_ADDRESS)
    assert served_by() == first.name
    assert net.neighbour(FLOATING_ADDRESS) == net.mac(first.name)
    print(f"\nfloating address held by {first.name} {time.monotonic() - started:.2f} s after start")

    died = time.monotonic()
    first.die()
    host_lost = takeover(net, hosts, second.name, died)
    print(f"host {first.name} killed and cut off: {host_lost}")

    first.recover()  # nopreempt: the recovered host, though of higher priority, waits
    wait_for(lambda: "Entering BACKUP STATE" in first.log().split("Starting Keepalived")[-1],
             TAKEOVER_DEADLINE, f"{first.name} back as BACKUP")  # fmt: skip
    # with preemption it would take the address once its master-down timer (3 adverts and a
    # skew) ran out: wait past that
    time.sleep(5 * first.keepalived.section.advert_interval)
    assert holder(net, hosts) == second.name
    assert served_by() == second.name

    died = time.monotonic()
    second.kill_nginx()  # keepalived runs on: its NGINX check fails, it gives the address up
    nginx_lost = takeover(net, hosts, first.name, died)
    print(f"NGINX of {second.name} killed: {nginx_lost}")
    assert "Entering FAULT STATE" in second.log()
