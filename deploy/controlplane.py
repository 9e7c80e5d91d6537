"""The control plane on several hosts: hosts in network namespaces of a swarm's test network.

What production runs on separate machines, each a host of its own here:

=============  ==============================================================================
``hk-db``      PostgreSQL: the hubs' database and the watchers' lease
``hk-huba``    hub instance a (its hub, its proxy) and an agent
``hk-hubb``    hub instance b, a warm standby, and an agent
``hk-w1/w2``   a hub watcher each; the lease says which one acts
``hk-nginx1/2``  NGINX, keepalived and an agent each; the floating address moves between them
=============  ==============================================================================

User servers are services on the swarm's workers. Alertmanager runs in the root namespace on
its test-network address. Every host has its own ports, so both hubs use the same ones, as on
two machines. Each host gets its own config file: the shared one with its ``[agent]``,
``[nginx]`` prefix, ``[keepalived]`` and endpoint addresses. The processes run in the hosts'
namespaces (``nsenter``); their files (logs, pid files, the hub state folder) share this
machine's file system, and a hub reaches the swarm manager's socket through it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import requests

from hubkeeper.config import AgentConfig, HubInstance, NginxConfig, WatcherConfig
from hubkeeper.deploy.keepalived import Keepalived, render
from hubkeeper.deploy.netns import FLOATING_ADDRESS, SUBNET, control_address
from hubkeeper.deploy.postgres import Postgres
from hubkeeper.deploy.stack import ManagedProcess, Stack, http_ok, to_toml, wait_for
from hubkeeper.files import write_atomically
from hubkeeper.hub.images import BASE_IMAGE, ensure_images
from hubkeeper.loader import load
from hubkeeper.nginx import GENERATION_HEADER, Nginx

HOSTS = ("db", "huba", "hubb", "w1", "w2", "nginx1", "nginx2")
HUBS = {"a": "huba", "b": "hubb"}
NGINX_HOSTS = ("nginx1", "nginx2")
WATCHERS = ("w1", "w2")
POSTGRES_PORT = 5432


def host(name: str) -> str:
    """The namespace of control-plane host ``name``."""
    return f"hk-{name}"


def address(name: str) -> str:
    return control_address(HOSTS.index(name) + 1)


def serves_generation(url: str) -> bool:
    """Whether NGINX answers at ``url`` with its generation header (the hub behind it may
    not answer yet)."""
    try:
        return GENERATION_HEADER in requests.get(url, timeout=2).headers
    except requests.RequestException:
        return False


@dataclass
class ControlPlane(Stack):
    """The stack's hubs, NGINX and watchers spread over hosts; needs ``swarm``."""

    lease_ttl: float = 2.0
    postgres: Postgres = field(init=False)
    host_configs: dict[str, Path] = field(default_factory=dict)

    @property
    def net(self) -> Any:
        assert self.swarm is not None, "the control plane runs on a swarm's test network"
        return self.swarm.net

    def write_config(self) -> Path:
        """The shared config (the root namespace's view: users reach the floating address)
        and each host's own file."""
        super().write_config()
        data = self.config_sections()
        nginx, agent_port = NginxConfig(), AgentConfig().endpoint.port
        agents = {name: f"http://{address(name)}:{agent_port}" for name in HOSTS}
        data["hub"]["url"] = f"http://{FLOATING_ADDRESS}:{nginx.public_port}"
        hub = data["jupyterhub"]
        hub["hub_connect_url"] = f"http://{FLOATING_ADDRESS}:{nginx.internal_port}"
        hub["database_url"] = self.postgres.url
        hub["database_password_file"] = str(self.postgres.password_file)
        defaults = HubInstance()  # the same ports on both hosts
        for instance in hub["instances"]:
            instance["host"] = address(HUBS[instance["name"]])
            for key in ("proxy_port", "proxy_api_port", "hub_port"):
                instance[key] = getattr(defaults, key)
        data["nginx"].update(
            listen="0.0.0.0", public_port=nginx.public_port, internal_port=nginx.internal_port
        )
        for instance in hub["instances"]:
            instance["agent"] = agents[HUBS[instance["name"]]]
        data["nginx"]["agents"] = [agents[name] for name in NGINX_HOSTS]
        token_file = self.workdir / "secrets" / "agent_token"
        write_atomically(token_file, secrets.token_hex(32).encode(), mode=0o600)
        data["agent"] = {"endpoint": {"port": agent_port, "token_file": str(token_file)}}
        data["watcher"].update(
            lease_database_url=hub["database_url"],
            lease_password_file=hub["database_password_file"],
            lease_ttl=self.lease_ttl,
            agent_token_file=str(token_file),
        )
        self.config_path.write_text(to_toml(data), encoding="utf-8")
        self.config = load(self.config_path)
        for name in HOSTS[1:]:
            self.host_configs[name] = self.node_config(name, self.host_sections(data, name))
        return self.config_path

    def host_sections(self, data: dict[str, Any], name: str) -> dict[str, Any]:
        """What differs on host ``name``: its agent, NGINX prefix, keepalived, endpoints."""
        own = address(name)
        endpoint = {**data["agent"]["endpoint"], "listen": own}
        agent = {
            **data["agent"],
            "endpoint": endpoint,
            "hubs": [hub for hub, on in HUBS.items() if on == name],
            "nginx": name in NGINX_HOSTS,
            "fencing_file": str(self.workdir / name / "agent-fencing-token"),
        }
        watcher_endpoint = {"listen": own, "port": WatcherConfig().endpoint.port}
        watcher = {**data["watcher"], "endpoint": watcher_endpoint}
        nginx = {**data["nginx"], "prefix": str(self.workdir / name / "nginx")}
        sections = {"agent": agent, "watcher": watcher, "nginx": nginx}
        if name in NGINX_HOSTS:
            peer = next(other for other in NGINX_HOSTS if other != name)
            sections["keepalived"] = {
                "address": f"{FLOATING_ADDRESS}/{SUBNET.prefixlen}",
                "priority": 150 if name == NGINX_HOSTS[0] else 100,
                "source": own,
                "peers": [address(peer)],
                "check_url": f"http://{own}:{NginxConfig().public_port}/nginx-generation",
            }
        return sections

    # -- bringing it up ------------------------------------------------------------------

    def up(self) -> ControlPlane:
        for number, name in enumerate(HOSTS, start=1):
            self.net.add_host(host(name), control_address(number))
        self.progress("control plane: PostgreSQL on hk-db")
        self.postgres = Postgres(
            self.workdir / "postgres", POSTGRES_PORT, address("db"), namespace=host("db")
        ).start()
        self.stop_callbacks.append(self.postgres.stop)
        self.write_config()
        self.docker = self.ensure_docker()
        self.load_images()
        self.start_alertmanager()
        self.stop_callbacks.append(self.remove_services)
        for name in ("huba", "hubb", *NGINX_HOSTS):
            self.start_on(name, "agent", self.config.agent.endpoint.port)
        self.progress("control plane: hub a on hk-huba, b warm on hk-hubb")
        self.agent_post("huba", "/v1/hubs/a/start").raise_for_status()
        self.agent_post("hubb", "/v1/hubs/b/warm").raise_for_status()
        a = self.config.jupyterhub.instance("a")
        wait_for(lambda: http_ok(f"http://{a.host}:{a.proxy_port}/hub/health"), 90, "hub a")
        for name in NGINX_HOSTS:
            self.start_nginx_host(name)
        wait_for(lambda: self.floating_holder() is not None, 30, "the floating address")
        for name in WATCHERS:
            self.start_on(name, "watch-hubs", WatcherConfig().endpoint.port)
        wait_for(lambda: self.leader() is not None, 30, "a leading watcher")
        return self

    def start_on(self, name: str, command: str, port: int) -> ManagedProcess:
        argv = [*self.net.enter(host(name)), *self.hubkeeper_argv(command, self.host_configs[name])]
        process = self.spawn(f"{command}-{name}", argv)
        return self.until_ready(process, f"http://{address(name)}:{port}/healthz", 60)

    def start_nginx_host(self, name: str) -> None:
        """NGINX serving hub a at generation 1 (as the agent would switch it), then
        keepalived; both in the host's namespace, stopped with the plane."""
        config = load(self.host_configs[name])
        self.install_nginx(config.nginx, self.config.jupyterhub.instance("a"))
        self.start_nginx(name)

    def start_nginx(self, name: str) -> None:
        """NGINX with the config it has, then keepalived."""
        config = load(self.host_configs[name])
        prefix = config.nginx.prefix
        self.spawn(f"nginx-{name}", [*self.net.enter(host(name)), config.nginx.binary, "-p",
                   prefix, "-c", f"{prefix}/nginx.conf", "-g", "daemon off;"])  # fmt: skip
        url = f"http://{address(name)}:{config.nginx.public_port}/nginx-generation"
        wait_for(lambda: serves_generation(url), 20, f"NGINX on {name}")
        keepalived = Keepalived(config.keepalived, self.workdir / name / "keepalived")
        keepalived.install(render(config.keepalived))
        self.spawn(f"keepalived-{name}", [*self.net.enter(host(name)), *keepalived.command()])

    @staticmethod
    def install_nginx(section: NginxConfig, active: HubInstance) -> None:
        nginx = Nginx(section, Path(section.prefix))
        nginx.install(nginx.render(active, generation=1))

    def load_images(self) -> None:
        assert self.swarm is not None
        self.swarm.load_images([BASE_IMAGE, *ensure_images(self.docker, self.progress)])

    def remove_services(self) -> None:
        """The hub's user services, so the swarm is clean for whoever uses it next."""
        assert self.swarm is not None
        label = f"{self.config.labels.hub}={self.config.jupyterhub.name}"
        manager = self.swarm.manager.client()
        for service in manager.services.list(filters={"label": label}):
            try:
                service.remove()
            except docker.errors.DockerException as error:
                self.progress(f"control plane: service {service.name} stays: {error}")

    # -- faults ---------------------------------------------------------------------------

    def kill_host(self, name: str) -> None:
        """The host dies: every process in it killed, then its cable pulled."""
        self.net.kill(host(name))
        self.net.cut(host(name))

    def revive(self, name: str) -> None:
        """The host back as after a reboot: its link, then what its units start at boot
        (an NGINX host without the floating address it held; a hub host's hub warm)."""
        if name in NGINX_HOSTS:
            floating = f"{FLOATING_ADDRESS}/{SUBNET.prefixlen}"
            self.net.run_in(host(name), "ip", "addr", "del", floating, "dev", "eth0", check=False)
            for pid_file in (self.workdir / name / "keepalived").glob("*.pid"):
                pid_file.unlink()  # a reboot empties /run: keepalived would think it runs
        self.net.restore(host(name))
        if name in WATCHERS:
            self.start_on(name, "watch-hubs", WatcherConfig().endpoint.port)
            return
        if name in NGINX_HOSTS:
            self.start_nginx(name)
        self.start_on(name, "agent", self.config.agent.endpoint.port)
        for instance, on in HUBS.items():
            if on == name:  # as `systemctl start jupyterhub@X` at boot: a warm standby
                hubctl_warm = [sys.executable, "-m", "hubkeeper.deploy.hubctl", "warm", instance]
                subprocess.run(
                    [*self.net.enter(host(name)), *hubctl_warm],
                    env={**os.environ, "HUBKEEPER_CONFIG": str(self.host_configs[name])},
                    check=True, capture_output=True, timeout=60,
                )  # fmt: skip

    def down(self) -> None:
        """The stack's teardown, then the hosts (anything still running in them is killed)."""
        try:
            super().down()
        finally:
            for name in HOSTS:
                if host(name) in self.net.hosts:
                    self.net.remove_host(host(name))

    # -- looking at it -------------------------------------------------------------------

    def agent_url_of(self, name: str) -> str:
        return f"http://{self.net.reachable(address(name))}:{self.config.agent.endpoint.port}"

    def agent_headers(self) -> dict[str, str]:
        token = self.config.agent.endpoint.token
        return {"Authorization": f"Bearer {token.reveal()}"} if token is not None else {}

    def agent_get(self, name: str, path: str) -> dict:
        response = requests.get(self.agent_url_of(name) + path, headers=self.agent_headers(),
                                timeout=10)  # fmt: skip
        response.raise_for_status()
        return dict(response.json())

    def agent_post(self, name: str, path: str, token: int = 0) -> requests.Response:
        """A request as a watcher of lease generation ``token`` would send it."""
        return requests.post(self.agent_url_of(name) + path, json={"token": token},
                             headers=self.agent_headers(), timeout=90)  # fmt: skip

    def watcher_status(self, name: str) -> dict | None:
        url = f"http://{self.net.reachable(address(name))}:{WatcherConfig().endpoint.port}/status"
        try:
            return dict(requests.get(url, timeout=2).json())
        except requests.RequestException:
            return None

    def leader(self) -> str | None:
        """The watcher host whose watcher says it leads (None: none does, or none answers)."""
        for name in WATCHERS:
            status = self.watcher_status(name)
            if status is not None and status["leadership"]["leading"]:
                return name
        return None

    def floating_holder(self) -> str | None:
        holders = [name for name in NGINX_HOSTS if self.net.holds(host(name), FLOATING_ADDRESS)]
        return holders[0] if len(holders) == 1 else None

    def saved_state(self) -> dict[str, Any]:
        with self.postgres.admin("jupyterhub") as connection:
            row = connection.execute("SELECT state FROM hubkeeper_watcher_state").fetchone()
        return dict(row[0]) if row else {}
