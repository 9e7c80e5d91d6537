"""The local stack: real components on free 127.0.0.1 ports, torn down by PID.

Used by the integration tests and by ``hubkeeper up``. Everything the stack starts is
recorded with its PID and stopped in reverse order, even when a test fails; anything it
did not start (an already running Docker engine) is left alone. Logs go to
``<workdir>/logs``. hubkeeper's daemons are restarted on failure as their systemd units say
(:mod:`hubkeeper.deploy.supervise`); one stopped or killed through its
:class:`ManagedProcess` is stopped on purpose and left alone.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import docker.errors
import requests

from hubkeeper.alerts.render import Rendered, render
from hubkeeper.config import (
    Config,
    DockerConfig,
    HubClientConfig,
    HubInstance,
    NginxConfig,
    Secret,
    WatcherConfig,
)
from hubkeeper.deploy import hubctl
from hubkeeper.deploy.supervise import Supervisor, unit_watchdog_sec
from hubkeeper.hub.images import ALT_IMAGE, BASE_IMAGE, SINGLEUSER_IMAGE, ensure_images
from hubkeeper.hub.settings import SERVICE_SCOPES
from hubkeeper.hubapi import HubClient
from hubkeeper.loader import load
from hubkeeper.nginx import Nginx

if TYPE_CHECKING:
    from hubkeeper.deploy.swarm import Node, Swarm

#: No bridge, no iptables rules: user containers use the host network.
DOCKERD_FLAGS = ("--bridge=none", "--iptables=false", "--ip-masq=false", "--ip6tables=false")
OPERATOR_SERVICE = "hubkeeper-operator"
PORT_NAMES = (
    "public",
    "internal",
    "proxy_a",
    "proxy_api_a",
    "hub_a",
    "proxy_b",
    "proxy_api_b",
    "hub_b",
    "watcher",
    "alertmanager",
    "prometheus",
    "containers",
    "culler",
    "shipper",
    "storage",
)
#: daemon command -> its config section (endpoint, hub token) and service name
DAEMONS = {
    "watch-hubs": ("watcher", "hubkeeper-watcher"),
    "export-containers": ("containers", "hubkeeper-containers"),
    "cull": ("culler", "hubkeeper-culler"),
    "ship-logs": ("shipper", None),
    "watch-storage": ("storage", None),
}


def default_ports() -> dict[str, int]:
    """The configuration model's default ports, for a stack at predictable addresses."""
    nginx, hub, watcher = NginxConfig(), HubInstance(), WatcherConfig()
    values = (
        nginx.public_port,
        nginx.internal_port,
        hub.proxy_port,
        hub.proxy_api_port,
        hub.hub_port,
        hub.proxy_port + 10,
        hub.proxy_api_port + 10,
        hub.hub_port + 10,
        watcher.endpoint.port,
        9093,
        9090,
        9102,
        9103,
        9104,
        9105,
    )
    return dict(zip(PORT_NAMES, values, strict=True))


def to_toml(data: dict[str, object], prefix: str = "") -> str:
    """Enough TOML for the generated config: scalars, lists of scalars, tables, arrays of tables."""
    scalars, tables = [], []
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            tables.append(f"\n[{path}]\n" + to_toml(value, path))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            tables += [f"\n[[{path}]]\n" + to_toml(item, path) for item in value]
        else:
            scalars.append(f"{key} = {_toml_value(value)}\n")
    return "".join(scalars) + "".join(tables)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1, below the kernel's ephemeral range.

    Ports from the ephemeral range (what binding port 0 returns) can be taken by any
    outgoing connection before the service that was meant to listen there starts.
    """
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    candidates = random.sample(range(20000, ephemeral_low), k=min(200, ephemeral_low - 20000))
    ports: list[int] = []
    for candidate in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
        ports.append(candidate)
        if len(ports) == count:
            return ports
    raise RuntimeError(f"could not find {count} free ports below {ephemeral_low}")


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class ManagedProcess:
    """A process this stack started, in its own session so its children stop with it.

    With ``relaunch`` it is a supervised daemon (:mod:`hubkeeper.deploy.supervise`): the
    supervisor starts it again through ``relaunch`` and the object stays the same, its
    ``popen`` (and ``pid``) the current process's. ``stopped`` marks a stop on purpose."""

    name: str
    popen: subprocess.Popen[bytes]
    relaunch: Callable[[], subprocess.Popen[bytes]] | None = None
    stopped: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def restart(self) -> bool:
        """Start it again, unless it was stopped on purpose (or is not supervised)."""
        with self.lock:
            if self.stopped or self.relaunch is None:
                return False
            self.popen = self.relaunch()
            return True

    def kill(self, signum: signal.Signals = signal.SIGKILL) -> None:
        """Signal its process group on purpose (a test that starts it again itself): the
        supervisor does not restart it."""
        with self.lock:
            self.stopped = True
        os.killpg(self.pid, signum)

    def stop(self, timeout: float = 15.0) -> None:
        with self.lock:  # after this, no restart can start a new process
            self.stopped = True
        if not self.running():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(5)


def docker_client(url: str) -> docker.DockerClient | None:
    """A client of the engine at ``url``, or None while it does not answer."""
    try:
        client = docker.DockerClient(base_url=url, timeout=120)
        client.ping()
    except docker.errors.DockerException:
        return None
    return client


def start_docker_engine(log_path: Path) -> ManagedProcess:
    """``dockerd`` without a bridge or iptables rules: containers use the host network."""
    if shutil.which("dockerd") is None:
        raise RuntimeError("no Docker engine: install docker.io (deploy/setup.sh does)")
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            ["dockerd", *DOCKERD_FLAGS], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    return ManagedProcess("dockerd", popen)


def wait_for_docker(url: str, log_path: Path) -> docker.DockerClient:
    wait_for(lambda: docker_client(url) is not None, 60, "the Docker engine")
    client = docker_client(url)
    if client is None:
        raise RuntimeError(f"the Docker engine stopped answering; see {log_path}")
    return client


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        return requests.get(url, timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


@dataclass
class Stack:
    """Hub ``a`` (and optionally a warm standby ``b`` with the watcher) behind NGINX.

    ``watcher`` holds ``[watcher]`` settings; when given, hub ``b`` is configured as the
    standby and ``hubkeeper watch-hubs`` runs against both. ``prometheus`` adds Prometheus
    and Alertmanager with the configuration ``hubkeeper alerts render`` writes from the
    ``[alerts]`` section (short intervals; ``overrides["alerts"]`` sets receivers).
    ``overrides`` replaces keys of any section of the generated config. With ``swarm`` (a
    running :class:`~hubkeeper.deploy.swarm.Swarm`) the hub spawns on it (its workers), the
    container exporter keeps the cluster's books from the manager, and each node gets its
    own exporter in its namespace and, with ``ship-logs``, its own shipper.
    """

    workdir: Path
    hub_name: str = "lab"
    ports: dict[str, int] | None = None
    watcher: dict[str, object] | None = None
    prometheus: bool = False
    daemons: tuple[str, ...] = ()
    listen: str = "127.0.0.1"  # NGINX's address: where users and user servers reach the hub
    overrides: dict[str, dict[str, object]] = field(default_factory=dict)
    progress: Callable[[str], None] = print
    swarm: Swarm | None = None
    node_shippers: dict[str, int] = field(default_factory=dict)  # node -> endpoint port
    processes: list[ManagedProcess] = field(default_factory=list)
    stop_callbacks: list[Callable[[], None]] = field(default_factory=list)
    config_path: Path = field(init=False)
    config: Config = field(init=False)
    supervisor: Supervisor = field(init=False)

    def __post_init__(self) -> None:
        self.workdir = self.workdir.resolve()
        self.logs = self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.ports = self.ports or dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
        self.supervisor = Supervisor(self.workdir)
        if self.swarm is not None:  # user servers on the nodes reach the hub through NGINX
            self.listen = self.swarm.host_address

    @property
    def instance_names(self) -> list[str]:
        return ["a", "b"] if self.watcher is not None else ["a"]

    # -- files ------------------------------------------------------------------------

    def write_config(self) -> Path:
        secrets_dir = self.workdir / "secrets"
        tokens_dir = secrets_dir / "services"
        tokens_dir.mkdir(parents=True, exist_ok=True)
        for path, value in [
            (secrets_dir / "cookie_secret", secrets.token_hex(32)),
            (secrets_dir / "proxy_token", secrets.token_hex(32)),
            *[(tokens_dir / f"{name}.token", secrets.token_hex(32)) for name in SERVICE_SCOPES],
        ]:
            if not path.exists():
                path.write_text(value + "\n", encoding="utf-8")
                path.chmod(0o600)
        ports = self.ports or {}
        hubctl_command = [sys.executable, "-m", "hubkeeper.deploy.hubctl"]
        data: dict[str, object] = {
            "hub": {
                "url": f"http://{self.listen}:{ports['public']}",
                "token_file": f"secrets/services/{OPERATOR_SERVICE}.token",
            },
            "jupyterhub": {
                "name": self.hub_name,
                "state_dir": str(self.workdir),
                "database_url": f"sqlite:///{self.workdir}/jupyterhub.sqlite",
                "cookie_secret_file": "secrets/cookie_secret",
                "proxy_token_file": "secrets/proxy_token",
                "services_token_dir": str(tokens_dir),
                "hub_connect_url": f"http://{self.listen}:{ports['internal']}",
                "image": SINGLEUSER_IMAGE,
                "allowed_images": [SINGLEUSER_IMAGE, ALT_IMAGE],
                "mem_limit": "512M",
                "cpu_limit": 1.0,
                "instances": [
                    {
                        "name": name,
                        "proxy_port": ports[f"proxy_{name}"],
                        "proxy_api_port": ports[f"proxy_api_{name}"],
                        "hub_port": ports[f"hub_{name}"],
                        **{
                            f"{action}_command": [*hubctl_command, action, name]
                            for action in ("start", "stop", "retire", "warm")
                        },
                    }
                    for name in self.instance_names
                ],
            },
            "nginx": {
                "prefix": f"{self.workdir}/nginx",
                "listen": self.listen,
                "public_port": ports["public"],
                "internal_port": ports["internal"],
            },
        }
        if self.watcher is not None:
            data["watcher"] = {
                "hub_token_file": "secrets/services/hubkeeper-watcher.token",
                "state_file": f"{self.workdir}/watcher-state.json",
                "endpoint": {"port": ports["watcher"]},
                "alertmanager_urls": [self.alertmanager_url],
                **self.watcher,
            }
        if "watch-storage" in self.daemons:  # a folder stands in for the notebook filesystem
            (self.workdir / "notebooks").mkdir(exist_ok=True)
            data["storage"] = {
                "mounts": [{"name": "notebooks", "path": f"{self.workdir}/notebooks"}],
                **data.get("storage", {}),  # type: ignore[dict-item]
            }
        for command in self.daemons:
            section, service = DAEMONS[command]
            daemon_data: dict[str, object] = {"endpoint": {"port": ports[section]}}
            if service is not None:
                daemon_data["hub_token_file"] = f"secrets/services/{service}.token"
            data[section] = {**daemon_data, **data.get(section, {})}  # type: ignore[dict-item]
        if self.prometheus:
            # Prometheus sends to the watcher's Alertmanager peers: one list for both
            data.setdefault("watcher", {"alertmanager_urls": [self.alertmanager_url]})
            data["alerts"] = {
                "prometheus_url": self.prometheus_url,
                "scrape_interval": 1.0,
                "scrape_timeout": 1.0,
                "evaluation_interval": 1.0,
                "group_wait": 3.0,  # > scrape + evaluation interval: inhibition in time
                "group_interval": 2.0,
                # every daemon the stack runs is scraped, so every rule can fire here
                "daemons": list(
                    dict.fromkeys(
                        (["watcher"] if self.watcher is not None else [])
                        + [DAEMONS[command][0] for command in self.daemons]
                    )
                ),
            }
        if self.swarm is not None:
            data["docker"] = {"url": self.swarm.manager.url}
            data["jupyterhub"]["spawner"] = "swarm"  # type: ignore[index]
            data["jupyterhub"]["placement_constraints"] = ["node.role==worker"]  # type: ignore[index]
            data["containers"] = {**data.get("containers", {}), "reconcile": "cluster"}  # type: ignore[dict-item]
        for section, values in self.overrides.items():
            data[section] = {**data.get(section, {}), **values}  # type: ignore[dict-item]
        self.config_path = self.workdir / "hubkeeper.toml"
        self.config_path.write_text(
            "# Generated by the hubkeeper local stack.\n" + to_toml(data), encoding="utf-8"
        )
        self.config = load(self.config_path)
        return self.config_path

    # -- components ---------------------------------------------------------------------

    def spawn(
        self,
        name: str,
        command: list[str],
        env: dict[str, str] | None = None,
        supervise: str | None = None,
    ) -> ManagedProcess:
        """Start ``command``, its output appended to ``logs/NAME.log``; with ``supervise``
        (the hubkeeper command of a daemon), restarted on failure and watched by the
        watchdog as its systemd unit says."""
        if supervise is not None:
            watchdog_sec = unit_watchdog_sec(supervise)
            env = {**(env or {}), **self.supervisor.notify_env(name, watchdog_sec)}
        launch = functools.partial(self._popen, name, command, env)
        process = ManagedProcess(name, launch(), relaunch=launch if supervise else None)
        self.processes.append(process)
        if supervise is not None:
            self.supervisor.watch(process, watchdog_sec)
        return process

    def _popen(
        self, name: str, command: list[str], env: dict[str, str] | None
    ) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            return subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=self.workdir,
                start_new_session=True,
            )

    def ensure_docker(self) -> docker.DockerClient:
        """Use this machine's running Docker engine, or start one (and stop it again at
        teardown); with a swarm, the engine its images are built on and copied from."""
        url = DockerConfig().url if self.swarm is not None else self.config.docker.url
        client = docker_client(url)
        if client is not None:
            return client
        self.progress("starting the Docker engine")
        self.processes.append(start_docker_engine(self.logs / "dockerd.log"))
        return wait_for_docker(url, self.logs / "dockerd.log")

    def start_hub(self, instance: str) -> int:
        """Start a hub instance the way the watcher does (``deploy.hubctl``); wait for it."""
        pid = hubctl.start(self.config, self.config_path, instance)
        hub = self.config.jupyterhub.instance(instance)
        url = f"http://{hub.host}:{hub.proxy_port}/hub/health"

        def alive() -> bool:
            return hubctl.launched_pid(self.config, instance) == pid

        wait_for(lambda: http_ok(url) or not alive(), 90, f"hub {instance}")
        if not alive():
            raise RuntimeError(f"hub {instance} exited; see {self.logs}/hub-{instance}.log")
        return pid

    @property
    def alertmanager_host(self) -> str:
        """127.0.0.1, or the test network's address with a swarm (hosts send it alerts)."""
        return self.listen if self.swarm is not None else "127.0.0.1"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{self.alertmanager_host}:{(self.ports or {})['alertmanager']}"

    def start_alertmanager(self) -> ManagedProcess:
        """Alertmanager with clustering off (it would bind every interface)."""
        folder = self.workdir / "alertmanager"
        folder.mkdir(exist_ok=True)
        config_file = folder / "alertmanager.yml"
        if self.prometheus:
            config_file = self.alerting.alertmanager
        else:
            config_file.write_text(
                "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n", encoding="utf-8"
            )
        process = self.spawn(
            "alertmanager",
            [
                "prometheus-alertmanager",
                f"--config.file={config_file}",
                f"--storage.path={folder / 'data'}",
                f"--web.listen-address={self.alertmanager_url.removeprefix('http://')}",
                "--cluster.listen-address=",
            ],
        )
        return self.until_ready(process, f"{self.alertmanager_url}/-/ready", 30)

    @functools.cached_property
    def alerting(self) -> Rendered:
        """Prometheus and Alertmanager configs from ``[alerts]``, rendered once into
        ``<workdir>/alerts``."""
        rendered = render(self.config, self.config_path, self.workdir / "alerts")
        for warning in rendered.warnings:
            self.progress(f"alerts: {warning}")
        return rendered

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{(self.ports or {})['prometheus']}"

    def start_prometheus(self) -> ManagedProcess:
        """Prometheus on 127.0.0.1 with the generated config and its own data folder."""
        process = self.spawn(
            "prometheus",
            [
                "prometheus",
                f"--config.file={self.alerting.prometheus}",
                f"--storage.tsdb.path={self.workdir / 'prometheus'}",
                f"--web.listen-address=127.0.0.1:{(self.ports or {})['prometheus']}",
                "--storage.tsdb.retention.time=1d",
                # re-send firing alerts every second: the first ones are dropped while no
                # Alertmanager has been discovered yet, and would wait a minute otherwise
                "--rules.alert.resend-delay=1s",
            ],
        )
        return self.until_ready(process, f"{self.prometheus_url}/-/ready", 30)

    def firing_alerts(self) -> list[dict]:
        """Alerts Alertmanager holds now (active, not silenced or inhibited)."""
        response = requests.get(f"{self.alertmanager_url}/api/v2/alerts", timeout=5)
        response.raise_for_status()
        return response.json()

    def start_daemon(self, command: str) -> ManagedProcess:
        """``hubkeeper COMMAND`` on the stack's config, ready once its /healthz answers."""
        section, _ = DAEMONS[command]
        name = "watcher" if command == "watch-hubs" else command
        process = self.spawn(name, self.hubkeeper_argv(command), supervise=command)
        endpoint = getattr(self.config, section).endpoint
        return self.until_ready(process, f"http://127.0.0.1:{endpoint.port}/healthz", 60)

    def hubkeeper_argv(self, command: str, config: Path | None = None) -> list[str]:
        config_path = str(config or self.config_path)
        return [sys.executable, "-m", "hubkeeper.cli", command, "--config", config_path]

    def until_ready(self, process: ManagedProcess, url: str, timeout: float) -> ManagedProcess:
        """Wait until ``url`` answers 200; fail at once, pointing at the log, if it exits."""
        wait_for(lambda: http_ok(url) or not process.running(), timeout, process.name)
        if not process.running():
            raise RuntimeError(f"{process.name} exited; see {self.logs}/{process.name}.log")
        return process

    def start_watcher(self) -> ManagedProcess:
        return self.start_daemon("watch-hubs")

    def start_nginx(self, active: str) -> Nginx:
        nginx = Nginx(self.config.nginx, Path(self.config.nginx.prefix))
        nginx.install(nginx.render(self.config.jupyterhub.instance(active), generation=1))
        pid = nginx.start()
        self.stop_callbacks.append(lambda: stop_pid(pid))
        wait_for(lambda: nginx.served_generation() == 1, 20, "NGINX")
        return nginx

    def up(self) -> Stack:
        self.write_config()
        self.supervisor.start()
        self.docker = self.ensure_docker()
        images = ensure_images(self.docker, self.progress)
        if self.swarm is not None:
            self.swarm.load_images([BASE_IMAGE, *images])
        self.progress("starting hub a")
        self.start_hub("a")
        self.progress("starting NGINX")
        self.nginx = self.start_nginx("a")
        if self.watcher is not None or self.prometheus:
            self.progress("starting Alertmanager")
            self.start_alertmanager()
        if self.watcher is not None:
            for name in self.instance_names[1:]:
                self.progress(f"warming hub {name} (a standby: imported, not on the database)")
                hubctl.warm(self.config, self.config_path, name)
            self.progress("starting the hub watcher")
            self.watcher_process = self.start_watcher()
        if self.prometheus:
            self.progress("starting Prometheus")
            self.start_prometheus()
        for command in self.daemons:
            self.progress(f"starting hubkeeper {command}")
            self.start_daemon(command)
        if self.swarm is not None:
            self.start_node_daemons(self.swarm)
        return self

    # -- a swarm's nodes ----------------------------------------------------------------

    def node_config(self, name: str, sections: dict[str, dict[str, object]]) -> Path:
        """The stack's config with ``sections`` replaced: a node daemon's own file."""
        path = self.workdir / f"{name}.toml"
        path.write_text(to_toml({**self.config_sections(), **sections}), encoding="utf-8")
        return path

    def start_node_daemons(self, swarm: Swarm) -> None:
        """Per node, as production runs them: the container exporter inside the node's
        namespace at its address (the culler reads CPU there), reading only its engine;
        with ``ship-logs``, a shipper of its engine's container logs (named by host.name)."""
        for node in swarm.nodes:
            self.progress(f"starting the exporter of {node.name} at {node.address}")
            port = self.config.containers.endpoint.port
            containers = {
                **self.config_sections()["containers"],
                "docker_url": node.url,
                "reconcile": "off",
                "endpoint": {"listen": node.address, "port": port},
            }
            path = self.node_config(f"exporter-{node.name}", {"containers": containers})
            process = self.spawn(
                f"exporter-{node.name}",
                ["nsenter", f"--net=/run/netns/{node.name}",
                 *self.hubkeeper_argv("export-containers", path)], supervise="export-containers",
            )  # fmt: skip
            self.until_ready(process, f"http://{swarm.reachable(node.address)}:{port}/healthz", 60)
            if "ship-logs" in self.daemons:
                self.start_node_shipper(node)

    def start_node_shipper(self, node: Node) -> None:
        (port,) = free_ports(1)
        shipper = {
            **self.config_sections()["shipper"],
            "host_name": node.name,
            "state_dir": str(self.workdir / f"shipper-{node.name}"),
            "endpoint": {"port": port},
            "sources": [{"name": "containers", "type": "docker"}],
        }
        path = self.node_config(
            f"ship-logs-{node.name}", {"docker": {"url": node.url}, "shipper": shipper}
        )
        argv = self.hubkeeper_argv("ship-logs", path)
        process = self.spawn(f"ship-logs-{node.name}", argv, supervise="ship-logs")
        self.until_ready(process, f"http://127.0.0.1:{port}/healthz", 60)
        self.node_shippers[node.name] = port

    def config_sections(self) -> dict[str, dict[str, object]]:
        """The generated config file's sections, as written."""
        return tomllib.loads(self.config_path.read_text(encoding="utf-8"))

    def down(self) -> None:
        """Stop the watcher first (it would fail over), then user containers, every hub
        instance (the watcher may have started any), and the rest, newest first. Every step
        is tried even when one before it fails, so nothing this stack started is left
        running; the first failure is raised at the end."""
        steps: list[Callable[[], object]] = [self.supervisor.stop]
        steps += [p.stop for p in self.processes if p.name == "watcher"]
        if hasattr(self, "docker"):
            steps.append(self._remove_user_containers)
        if hasattr(self, "config"):
            for name in self.instance_names:
                steps.append(functools.partial(hubctl.stop, self.config, name, grace=10))
                steps.append(functools.partial(hubctl.retire, self.config, name, grace=10))
        steps += reversed(self.stop_callbacks)
        steps += [process.stop for process in reversed(self.processes)]
        failures = []
        for step in steps:
            try:
                step()
            except Exception as exc:  # reported, then the next step: nothing left behind
                self.progress(f"teardown step failed: {type(exc).__name__}: {exc}")
                failures.append(exc)
        if failures:
            raise failures[0]

    def _remove_user_containers(self) -> None:
        hub_label = f"{self.config.labels.hub}={self.config.jupyterhub.name}"
        with contextlib.suppress(docker.errors.DockerException):
            for container in self.docker.containers.list(all=True, filters={"label": hub_label}):
                with contextlib.suppress(docker.errors.DockerException):
                    container.remove(force=True)

    # -- clients ------------------------------------------------------------------------

    def client(self, service: str = OPERATOR_SERVICE) -> HubClient:
        token_path = Path(self.config.jupyterhub.services_token_dir or "") / f"{service}.token"
        hub = HubClientConfig(url=self.config.hub.url, token=Secret(token_path.read_text().strip()))
        return HubClient(hub)

    @property
    def public_url(self) -> str:
        return self.config.hub.url

    def _describe_extras(self) -> str:
        lines = []
        if self.prometheus:
            lines.append(f"  Prometheus            {self.prometheus_url}")
        for command in self.daemons:
            endpoint = getattr(self.config, DAEMONS[command][0]).endpoint
            url = f"http://127.0.0.1:{endpoint.port}"
            lines.append(f"  {command:<21} {url}/metrics  {url}{PRTG_SENSORS[command]}")
        hosts = self.config.shipper.elasticsearch.hosts if "ship-logs" in self.daemons else []
        lines += [f"  Elasticsearch         {host}" for host in hosts]
        for node in self.swarm.nodes if self.swarm is not None else []:
            exporter = f"http://{node.address}:{self.config.containers.endpoint.port}"
            lines.append(f"  node {node.name:<16} docker -H {node.url}")
            lines.append(f"    export-containers   {exporter}/metrics  {exporter}/prtg/overview")
            if node.name in self.node_shippers:
                shipper = f"http://127.0.0.1:{self.node_shippers[node.name]}"
                lines.append(f"    ship-logs           {shipper}/metrics  {shipper}/prtg/shipper")
        return "".join(f"\n{line}" for line in lines)

    def _try_swarm(self) -> str:
        """Lines of the try-this for a swarm: a server on each worker, a worker cut off."""
        if self.swarm is None:
            return ""
        manager, worker = self.swarm.manager, self.swarm.workers[0]
        return f"""
  curl -H "Authorization: token $TOKEN" -X POST {self.public_url}/hub/api/users/bob
  curl -H "Authorization: token $TOKEN" -X POST {self.public_url}/hub/api/users/bob/server
  docker -H {manager.url} service ps $(docker -H {manager.url} service ls -q)  # one per worker
  ip -n {worker.name} link set eth0 down   # cut off: HubkeeperSwarmNodeDown, its server missing
  ip -n {worker.name} link set eth0 up     # back: Swarm stops that task, the books balance"""

    def describe(self) -> str:
        token_file = (
            Path(self.config.jupyterhub.services_token_dir or "") / "hubkeeper-operator.token"
        )
        watcher = f"http://127.0.0.1:{self.config.watcher.endpoint.port}"
        hubkeeper = f"{sys.executable} -m hubkeeper.cli"
        return f"""
hubkeeper local stack is up (state and logs in {self.workdir})
  hub through NGINX     {self.public_url}/hub/  (any user name; dummy authenticator)
  hub API (internal)    {self.config.jupyterhub.hub_connect_url}/hub/api
  hub watcher           {watcher}/metrics  {watcher}/status  {watcher}/prtg/hubs
  Alertmanager          {self.alertmanager_url}{self._describe_extras()}
  config                {self.config_path}
Try this:
  TOKEN=$(cat {token_file})
  curl -H "Authorization: token $TOKEN" -X POST {self.public_url}/hub/api/users/alice
  curl -H "Authorization: token $TOKEN" -X POST {self.public_url}/hub/api/users/alice/server
  docker ps --filter label={self.config.labels.user}=alice{self._try_swarm()}
  kill -9 $(cat {self.workdir}/hub-a.launched.pid)   # hub a dies; b takes over
  {hubkeeper} status --config {self.config_path}
Ctrl-C stops everything.
"""


PRTG_SENSORS = {
    "export-containers": "/prtg/overview  (and /prtg/servers/<user>)",
    "cull": "/prtg/culler",
    "ship-logs": "/prtg/shipper",
    "watch-storage": "/prtg/storage  (and /status)",
}


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running_stack(
    workdir: Path,
    hub_name: str = "lab",
    ports: dict[str, int] | None = None,
    watcher: dict[str, object] | None = None,
    overrides: dict[str, dict[str, object]] | None = None,
    progress: Callable[[str], None] = print,
    prometheus: bool = False,
    daemons: tuple[str, ...] = (),
    listen: str = "127.0.0.1",
    swarm: Swarm | None = None,
) -> Iterator[Stack]:
    stack = Stack(
        workdir,
        hub_name=hub_name,
        ports=ports,
        watcher=watcher,
        prometheus=prometheus,
        daemons=daemons,
        listen=listen,
        swarm=swarm,
        overrides=overrides or {},
        progress=progress,
    )
    try:
        yield stack.up()
    finally:
        stack.down()
