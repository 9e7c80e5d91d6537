"""A real Docker Swarm on this machine: engines in network namespaces of their own.

The recipe of ../shared/DESIGN.md ("A real Swarm in network namespaces"): a node per host
of a :class:`~hubkeeper.deploy.netns.TestNetwork` (addresses ``.11`` up), and a Docker
engine started inside it with its own hostname, data, socket and cgroup parent; the first
node initialises the swarm, the others join it. Everything is removed on exit: the engines
(this process's children), mounts under their roots, namespaces, cgroups.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker

from hubkeeper.deploy.engine import copy_images, dockerd_flags, end_process, remove_engine_files
from hubkeeper.deploy.netns import ROOT_ADDRESS, SUBNET, NetworkError, TestNetwork, node_address
from hubkeeper.deploy.scoped import Scoped
from hubkeeper.deploy.stack import docker_client, wait_for

#: Address pools of the engines' own networks, inside the test range too.
POOL = "10.213.128.0/17"
BRIDGE_NAMESPACE = "hk-swarm-br"
HOST_INTERFACE = "hk-swarm0"
CGROUP_CONTROLLERS = Path("/sys/fs/cgroup")
RUN_DIR = Path("/run/hk-swarm")
#: Nodes report every second (Docker's default: 5 s), so a lost node is down in seconds.
HEARTBEAT_NS = 1_000_000_000


SwarmError = NetworkError  # one error for the swarm and the network under it


@dataclass(frozen=True)
class Node:
    name: str
    address: str
    root: Path

    @property
    def run_dir(self) -> Path:
        """Sockets and state (short: a Unix socket's path has at most 107 bytes)."""
        return RUN_DIR / self.name

    @property
    def url(self) -> str:
        return f"unix://{self.run_dir / 'docker.sock'}"

    def client(self, timeout: float = 30) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=timeout)


@dataclass
class Swarm(Scoped):
    """``size`` engines (the first the manager) under ``workdir``; use as a context."""

    workdir: Path
    size: int = 3
    progress: Callable[[str], None] = print
    nodes: list[Node] = field(default_factory=list)
    host_address: str = ROOT_ADDRESS
    engines: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    net: TestNetwork = field(default_factory=lambda: TestNetwork(BRIDGE_NAMESPACE, HOST_INTERFACE))

    def __post_init__(self) -> None:
        self.nodes = [
            Node(f"hk-node{i}", node_address(i), self.workdir / f"node{i}")
            for i in range(1, self.size + 1)
        ]

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> list[Node]:
        return self.nodes[1:]

    def up(self) -> None:
        self.network()
        for node in self.nodes:
            self.start_engine(node)
        self.form()

    # -- network -------------------------------------------------------------------------

    def network(self) -> None:
        """The test network with a host per node (each reachable before anything is sent)."""
        self.progress(f"swarm: network {SUBNET} in namespaces")
        self.net.up()
        for node in self.nodes:
            self.net.add_host(node.name, node.address)

    def reachable(self, address: str) -> str:
        return self.net.reachable(address)

    # -- engines ---------------------------------------------------------------------------

    def start_engine(self, node: Node) -> None:
        node.root.mkdir(parents=True, exist_ok=True)
        node.run_dir.mkdir(parents=True, exist_ok=True)
        dockerd = shlex.join(
            [
                "dockerd",
                *dockerd_flags(node.root / "data", node.run_dir, node.url),
                f"--cgroup-parent=/{node.name}",
                f"--default-address-pool=base={POOL},size=24",
            ]
        )
        log = (node.root / "dockerd.log").open("ab")
        self.engines[node.name] = self.net.popen(
            node.name,
            ["unshare", "--uts", "sh", "-c", f"hostname {node.name}; exec {dockerd}"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(lambda: docker_client(node.url) is not None, 60, f"engine {node.name}")

    def form(self) -> None:
        self.progress(f"swarm: {self.manager.name} initialises, {len(self.workers)} join")
        manager = self.manager.client()
        manager.swarm.init(
            advertise_addr=self.manager.address,
            listen_addr=f"{self.manager.address}:2377",
            default_addr_pool=[POOL],
            subnet_size=24,
            dispatcher_heartbeat_period=HEARTBEAT_NS,
        )
        token = manager.swarm.attrs["JoinTokens"]["Worker"]
        for node in self.workers:
            node.client().swarm.join(
                remote_addrs=[f"{self.manager.address}:2377"],
                join_token=token,
                listen_addr=f"{node.address}:2377",
                advertise_addr=node.address,
            )

        def all_ready() -> bool:
            states = [n.attrs["Status"]["State"] for n in manager.nodes.list()]
            return states.count("ready") == self.size

        wait_for(all_ready, 60, "every node of the swarm to be ready")

    def load_images(self, tags: list[str]) -> None:
        """Copy images of this machine's engine to every node (there is no registry)."""
        copy_images(tags, [node.url for node in self.nodes], self.workdir, self.progress)

    # -- teardown --------------------------------------------------------------------------

    def down(self) -> None:
        """Remove everything ``up`` made, whatever state it got to."""
        for node in reversed(self.nodes):
            with contextlib.suppress(docker.errors.DockerException, OSError):
                node.client(5).swarm.leave(force=True)
        for node in self.nodes:
            self._stop_engine(node)
        self.net.down()
        for node in self.nodes:
            for controller in CGROUP_CONTROLLERS.glob(f"*/{node.name}"):
                for group in sorted(controller.rglob("*"), reverse=True):
                    with contextlib.suppress(OSError):
                        group.rmdir()
                with contextlib.suppress(OSError):
                    controller.rmdir()

    def _stop_engine(self, node: Node) -> None:
        engine = self.engines.pop(node.name, None)
        if engine is not None:  # nsenter, unshare and sh exec: the process is dockerd
            end_process(engine, 20)
        remove_engine_files(node.run_dir, node.root / "data")  # its log stays
