"""The local stack: real components on free 127.0.0.1 ports, torn down by PID.

Used by the integration tests and by ``hubkeeper up``. Everything the stack starts is
recorded with its PID and stopped in reverse order, even when a test fails; anything it
did not start (an already running Docker engine) is left alone. Logs go to
``<workdir>/logs``.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import requests

from hub.images import ALT_IMAGE, SINGLEUSER_IMAGE, ensure_images
from hub.settings import SERVICE_SCOPES
from hubkeeper.config import Config, HubClientConfig, HubInstance, NginxConfig, Secret, load
from hubkeeper.hubapi import HubClient
from hubkeeper.nginx import Nginx

HUB_CONFIG = Path(__file__).resolve().parent.parent / "hub" / "jupyterhub_config.py"
DOCKERD_FLAGS = ("--bridge=none", "--iptables=false", "--ip-masq=false")
OPERATOR_SERVICE = "hubkeeper-operator"
PORT_NAMES = ("public", "internal", "proxy_a", "proxy_api_a", "hub_a")


def default_ports() -> dict[str, int]:
    """The configuration model's default ports, for a stack at predictable addresses."""
    nginx, hub = NginxConfig(), HubInstance()
    values = (
        nginx.public_port,
        nginx.internal_port,
        hub.proxy_port,
        hub.proxy_api_port,
        hub.hub_port,
    )
    return dict(zip(PORT_NAMES, values, strict=True))


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
    """A process this stack started, in its own session so its children stop with it."""

    name: str
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
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


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        return requests.get(url, timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


@dataclass
class Stack:
    """One hub (instance ``a``) with DockerSpawner behind NGINX, in ``workdir``."""

    workdir: Path
    hub_name: str = "lab"
    ports: dict[str, int] | None = None
    progress: Callable[[str], None] = print
    processes: list[ManagedProcess] = field(default_factory=list)
    stop_callbacks: list[Callable[[], None]] = field(default_factory=list)
    config_path: Path = field(init=False)
    config: Config = field(init=False)

    def __post_init__(self) -> None:
        self.workdir = self.workdir.resolve()
        self.logs = self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.ports = self.ports or dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))

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
        text = f"""\
# Generated by the hubkeeper local stack.
[hub]
url = "http://127.0.0.1:{ports["public"]}"
token_file = "secrets/services/{OPERATOR_SERVICE}.token"

[jupyterhub]
name = "{self.hub_name}"
state_dir = "{self.workdir}"
database_url = "sqlite:///{self.workdir}/jupyterhub.sqlite"
cookie_secret_file = "secrets/cookie_secret"
proxy_token_file = "secrets/proxy_token"
services_token_dir = "{tokens_dir}"
hub_connect_url = "http://127.0.0.1:{ports["internal"]}"
image = "{SINGLEUSER_IMAGE}"
allowed_images = ["{SINGLEUSER_IMAGE}", "{ALT_IMAGE}"]
mem_limit = "512M"
cpu_limit = 1.0

[[jupyterhub.instances]]
name = "a"
proxy_port = {ports["proxy_a"]}
proxy_api_port = {ports["proxy_api_a"]}
hub_port = {ports["hub_a"]}

[nginx]
prefix = "{self.workdir}/nginx"
public_port = {ports["public"]}
internal_port = {ports["internal"]}
"""
        self.config_path = self.workdir / "hubkeeper.toml"
        self.config_path.write_text(text, encoding="utf-8")
        self.config = load(self.config_path)
        return self.config_path

    # -- components ---------------------------------------------------------------------

    def spawn(
        self, name: str, command: list[str], env: dict[str, str] | None = None
    ) -> ManagedProcess:
        log = (self.logs / f"{name}.log").open("ab")
        popen = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=self.workdir,
            start_new_session=True,
        )
        log.close()
        process = ManagedProcess(name, popen)
        self.processes.append(process)
        return process

    def ensure_docker(self) -> docker.DockerClient:
        """Use the running Docker engine, or start one (and stop it again at teardown)."""
        client = self._docker_client()
        if client is not None:
            return client
        if shutil.which("dockerd") is None:
            raise RuntimeError("no Docker engine: install docker.io (deploy/setup.sh does)")
        self.progress("starting the Docker engine")
        self.spawn("dockerd", ["dockerd", *DOCKERD_FLAGS])
        wait_for(lambda: self._docker_client() is not None, 60, "the Docker engine")
        client = self._docker_client()
        if client is None:
            raise RuntimeError(f"the Docker engine stopped answering; see {self.logs}/dockerd.log")
        return client

    def _docker_client(self) -> docker.DockerClient | None:
        """A client of the configured engine, or None while it does not answer."""
        try:
            client = docker.DockerClient(base_url=self.config.docker.url, timeout=120)
            client.ping()
        except docker.errors.DockerException:
            return None
        return client

    def start_hub(self, instance: str) -> ManagedProcess:
        hub = self.config.jupyterhub.instance(instance)
        env = {"HUBKEEPER_CONFIG": str(self.config_path), "HUBKEEPER_HUB_INSTANCE": instance}
        process = self.spawn(
            f"hub-{instance}",
            [sys.executable, "-m", "jupyterhub", "-f", str(HUB_CONFIG)],
            env,
        )
        url = f"http://127.0.0.1:{hub.proxy_port}/hub/health"
        wait_for(lambda: http_ok(url) or not process.running(), 90, f"hub {instance}")
        if not process.running():
            raise RuntimeError(f"hub {instance} exited; see {self.logs}/hub-{instance}.log")
        return process

    def start_nginx(self, active: str) -> Nginx:
        nginx = Nginx(self.config.nginx, Path(self.config.nginx.prefix))
        nginx.install(nginx.render(self.config.jupyterhub.instance(active), generation=1))
        pid = nginx.start()
        self.stop_callbacks.append(lambda: _stop_pid(pid))
        wait_for(lambda: nginx.served_generation() == 1, 20, "NGINX")
        return nginx

    def up(self) -> Stack:
        self.write_config()
        self.docker = self.ensure_docker()
        ensure_images(self.docker, self.progress)
        self.progress("starting hub a")
        self.hub_process = self.start_hub("a")
        self.progress("starting NGINX")
        self.nginx = self.start_nginx("a")
        return self

    def down(self) -> None:
        """Stop user containers of this hub, then everything started here, newest first."""
        if hasattr(self, "docker"):
            self._remove_user_containers()
        for callback in reversed(self.stop_callbacks):
            callback()
        for process in reversed(self.processes):
            process.stop()

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

    def describe(self) -> str:
        token_file = (
            Path(self.config.jupyterhub.services_token_dir or "") / "hubkeeper-operator.token"
        )
        return f"""
hubkeeper local stack is up (state and logs in {self.workdir})
  hub through NGINX     {self.public_url}/hub/  (any user name; dummy authenticator)
  hub API (internal)    {self.config.jupyterhub.hub_connect_url}/hub/api
  config                {self.config_path}
Try this:
  TOKEN=$(cat {token_file})
  curl -H "Authorization: token $TOKEN" -X POST {self.public_url}/hub/api/users/alice
  curl -H "Authorization: token $TOKEN" -X POST {self.public_url}/hub/api/users/alice/server
  docker ps --filter label={self.config.labels.user}=alice
Ctrl-C stops everything.
"""


def _stop_pid(pid: int, timeout: float = 10.0) -> None:
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
    progress: Callable[[str], None] = print,
) -> Iterator[Stack]:
    stack = Stack(workdir, hub_name=hub_name, ports=ports, progress=progress)
    try:
        yield stack.up()
    finally:
        stack.down()
