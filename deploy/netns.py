"""A test network of hosts on this machine: one network namespace per host.

The recipe of ../shared/DESIGN.md (section 5): one bridge in a namespace of its own; per
host a namespace with a veth on that bridge, an address from one fixed test subnet, ``lo``
up and no default route. The root namespace gets one interface on the bridge (the first
address) and talks to a host only after ``ip route get`` names that interface, so no packet
meant for a test host can leave the machine. Only what this network created is removed.

Address plan of the test subnet (fixed, so hosts of different kinds can share one network):

=================  ==============================================================
``.1``             the root namespace (:data:`ROOT_ADDRESS`)
``.11`` - ``.39``  Swarm nodes (:func:`node_address`; ``hk-node1`` is ``.11``)
``.40`` - ``.79``  control-plane hosts: hubs, watchers, NGINX (:func:`control_address`)
``.100``           the floating service address moved by keepalived (:data:`FLOATING_ADDRESS`)
=================  ==============================================================
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
from dataclasses import dataclass, field
from typing import Any

from hubkeeper.deploy.scoped import Scoped

SUBNET = ipaddress.ip_network("10.213.0.0/24")
ROOT_ADDRESS = str(SUBNET.network_address + 1)
FLOATING_ADDRESS = str(SUBNET.network_address + 100)
NODES = range(11, 40)
CONTROL = range(40, 80)


class NetworkError(RuntimeError):
    pass


def run(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {result.stderr.strip() or result.stdout.strip()}")
    return result


def _address(block: range, index: int, kind: str) -> str:
    if not 0 <= index < len(block):
        raise NetworkError(f"{kind} {index + 1}: at most {len(block)} on the test network")
    return str(SUBNET.network_address + block[index])


def node_address(number: int) -> str:
    """The address of Swarm node ``number`` (from 1)."""
    return _address(NODES, number - 1, "Swarm node")


def control_address(number: int) -> str:
    """The address of control-plane host ``number`` (from 1): hubs, watchers, NGINX."""
    return _address(CONTROL, number - 1, "control-plane host")


@dataclass
class TestNetwork(Scoped):
    """The bridge and the root namespace's interface; hosts added by name; use as a context.

    ``bridge_namespace`` and ``interface`` name what this network creates in the root
    namespace: two networks must not be up at once (they share the subnet), which
    :meth:`up` refuses.
    """

    __test__ = False  # not a pytest test class

    bridge_namespace: str
    interface: str
    hosts: dict[str, str] = field(default_factory=dict)  # name -> address
    ports: dict[str, str] = field(default_factory=dict)  # name -> its port on the bridge
    created: list[str] = field(default_factory=list)  # namespaces, for down()

    def up(self) -> None:
        """The bridge in its namespace and the root namespace's interface on it."""
        routes = json.loads(run("ip", "-j", "route", "show", "root", str(SUBNET)).stdout)
        if routes:
            raise NetworkError(
                f"{SUBNET} is routed over {routes[0].get('dev')} already: another test network "
                "is up (see `ip netns list`)"
            )
        self._namespace(self.bridge_namespace)
        run("ip", "-n", self.bridge_namespace, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.bridge_namespace, "link", "set", "br0", "up")
        run("ip", "link", "add", self.interface, "type", "veth", "peer", "name", "host",
            "netns", self.bridge_namespace)  # fmt: skip
        run("ip", "-n", self.bridge_namespace, "link", "set", "host", "master", "br0", "up")
        run("ip", "addr", "add", f"{ROOT_ADDRESS}/{SUBNET.prefixlen}", "dev", self.interface)
        run("ip", "link", "set", self.interface, "up")

    def _namespace(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self.created.append(name)

    def add_host(self, name: str, address: str) -> str:
        """A namespace ``name`` on the bridge at ``address`` (eth0), no default route;
        returns the address once the root namespace reaches it over the test interface."""
        if ipaddress.ip_address(address) not in SUBNET or address == ROOT_ADDRESS:
            raise NetworkError(f"{name}: {address} is not a host address of {SUBNET}")
        if address in self.hosts.values():
            raise NetworkError(f"{name}: {address} is taken")
        self._namespace(name)
        port = f"port{len(self.ports) + 1}"
        self.ports[name] = port
        self.hosts[name] = address
        run("ip", "-n", self.bridge_namespace, "link", "add", port, "type", "veth",
            "peer", "name", "eth0", "netns", name)  # fmt: skip
        run("ip", "-n", self.bridge_namespace, "link", "set", port, "master", "br0", "up")
        run("ip", "-n", name, "addr", "add", f"{address}/{SUBNET.prefixlen}", "dev", "eth0")
        run("ip", "-n", name, "link", "set", "eth0", "up")
        run("ip", "-n", name, "link", "set", "lo", "up")
        return self.reachable(address)

    def remove_host(self, name: str) -> None:
        """Kill what still runs in the host, then delete its namespace (and its veth)."""
        self.kill(name)
        run("ip", "netns", "del", name, check=False)
        self.created.remove(name)
        self.hosts.pop(name)
        run("ip", "-n", self.bridge_namespace, "link", "del", self.ports.pop(name), check=False)

    def cut(self, name: str) -> None:
        """Pull the host's cable: its port on the bridge goes down (the host sees no carrier)."""
        run("ip", "-n", self.bridge_namespace, "link", "set", self.ports[name], "down")

    def restore(self, name: str) -> None:
        run("ip", "-n", self.bridge_namespace, "link", "set", self.ports[name], "up")

    def reachable(self, address: str) -> str:
        """``address``, once ``ip route get`` says it goes over the test's own interface;
        raises otherwise (it would leave the machine)."""
        if ipaddress.ip_address(address) not in SUBNET:
            raise NetworkError(f"{address} is not a test address ({SUBNET})")
        route = json.loads(run("ip", "-j", "route", "get", address).stdout)
        if not route or route[0].get("dev") != self.interface:
            raise NetworkError(f"{address} would not go over {self.interface}: {route}")
        return address

    # -- inside a host ------------------------------------------------------------------------

    @staticmethod
    def enter(name: str) -> list[str]:
        """The argv prefix that runs a command in host ``name``'s network namespace (nsenter,
        not ``ip netns exec``: that remounts /sys and hides the cgroups)."""
        return ["nsenter", f"--net=/run/netns/{name}"]

    def popen(self, name: str, argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` in host ``name`` in a session of its own (stdin closed)."""
        self._known(name)
        options = {"stdin": subprocess.DEVNULL, "start_new_session": True, **options}
        return subprocess.Popen([*self.enter(name), *argv], **options)

    def run_in(self, name: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        self._known(name)
        return run(*self.enter(name), *argv, check=check)

    def sysctl(self, name: str, key: str, value: str) -> None:
        """Set a per-namespace kernel setting (``net.*``) in host ``name`` only."""
        self.run_in(name, "sysctl", "-q", "-w", f"{key}={value}")

    def mac(self, name: str) -> str:
        """The hardware address of the host's eth0."""
        (link,) = json.loads(self.run_in(name, "ip", "-j", "link", "show", "eth0").stdout)
        return str(link["address"])

    def holds(self, name: str, address: str) -> bool:
        """Whether ``address`` is configured on the host's eth0 right now."""
        links = json.loads(self.run_in(name, "ip", "-j", "addr", "show", "eth0").stdout)
        return any(a.get("local") == address for link in links for a in link["addr_info"])

    def neighbour(self, address: str) -> str | None:
        """The hardware address the root namespace's ARP cache has for ``address`` on the
        test interface (none, or an entry that failed, is ``None``). Sends nothing."""
        entries = json.loads(
            run("ip", "-j", "neigh", "show", address, "dev", self.interface).stdout
        )
        return next((str(e["lladdr"]) for e in entries if "lladdr" in e), None)

    def pids(self, name: str) -> list[int]:
        """Every process in the host's namespace (all started by the test or its children)."""
        self._known(name)
        return [int(pid) for pid in run("ip", "netns", "pids", name).stdout.split()]

    def kill(self, name: str) -> None:
        """SIGKILL every process in the host: the host dies as it would by losing power."""
        for pid in self.pids(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _known(self, name: str) -> None:
        if name not in self.hosts:
            raise NetworkError(f"{name} is not a host of this test network")

    def down(self) -> None:
        """Remove what this network created; stop the hosts' processes first (a namespace
        lives on, unnamed, while a process runs in it)."""
        for name in reversed(self.created):
            run("ip", "netns", "del", name, check=False)
        if self.bridge_namespace in self.created:
            run("ip", "link", "del", self.interface, check=False)
        self.created.clear()
        self.hosts.clear()
        self.ports.clear()
