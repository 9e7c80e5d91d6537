"""DockerSpawner and SwarmSpawner on the host network, labelled for hubkeeper.

DockerSpawner assumes a bridge network (fixed port 8888, port bindings). With host
networking each server instead listens on its own free port: on the configured address of
this machine (one engine), or on every address of the node its Swarm task runs on, where
the hub's proxy reaches it by the node's address.
"""

from __future__ import annotations

from typing import Any

import requests
from docker.types import RestartPolicy
from dockerspawner import DockerSpawner, SwarmSpawner
from jupyterhub.utils import random_port
from traitlets import Dict, List, Unicode, default


def engine_unanswered(error: BaseException | None) -> bool:
    """Whether a Docker call failed because the engine did not answer (down, restarting:
    no socket, connection refused or cut, timed out), rather than with an answer; also when
    the client wraps that failure (its first call asks the engine for its API version)."""
    while error is not None:
        if isinstance(error, requests.ConnectionError | requests.Timeout):
            return True
        error = error.__cause__
    return False


class HostNetwork:
    """What both spawners share: the host network, a free port per server, ``raw_image``,
    and a poll that outlives an engine restart."""

    image: str
    port: int
    log: Any
    _log_name: str
    _engine_unanswered: bool = False

    @default("network_name")
    def _network_name_default(self) -> str:
        return "host"

    @default("use_internal_ip")
    def _use_internal_ip_default(self) -> bool:
        return True

    def template_namespace(self) -> dict[str, Any]:
        namespace = super().template_namespace()  # type: ignore[misc]
        namespace["raw_image"] = self.image
        return namespace

    async def start(self) -> Any:
        self.port = random_port()
        return await super().start()  # type: ignore[misc]

    async def poll(self) -> int | str | None:
        """The container's state; None (running) while the engine does not answer.

        With live-restore the containers outlive the engine, so "no answer" is no news of
        the server. DockerSpawner raises then, and a hub starting meanwhile (a failover)
        takes such a server as stopped and forgets it: its container is left an orphan. A
        hub that starts checks the server itself over HTTP after a None."""
        try:
            status = await super().poll()  # type: ignore[misc]
        except Exception as error:
            if not engine_unanswered(error):
                raise
            if not self._engine_unanswered:
                self.log.warning(
                    "Docker engine did not answer a poll of %s (%s): taken as still running",
                    self._log_name,
                    error,
                )
            self._engine_unanswered = True
            return None
        if self._engine_unanswered:
            self.log.info("Docker engine answers again: %s polled", self._log_name)
        self._engine_unanswered = False
        return status  # type: ignore[no-any-return]


class HostNetworkDockerSpawner(HostNetwork, DockerSpawner):
    server_address = Unicode(
        "127.0.0.1", config=True, help="Address the hub and proxy use to reach user servers."
    )

    async def get_ip_and_port(self) -> tuple[str, int]:
        return self.server_address, self.port


def placement(
    constraints: list[str], rules: list[dict[str, Any]], image: str, groups: list[str]
) -> list[str]:
    """The constraints of every server, then those of each rule for its image or one of
    the user's groups (rules are ``[[jupyterhub.placement]]`` tables)."""
    extra = [
        constraint
        for rule in rules
        if rule.get("image") == image or rule.get("group") in groups
        for constraint in rule["constraints"]
    ]
    return list(dict.fromkeys([*constraints, *extra]))


class HostNetworkSwarmSpawner(HostNetwork, SwarmSpawner):
    """One Swarm service per server, its task on any node the placement allows."""

    placement_constraints = List(
        Unicode(), config=True, help="Swarm placement constraints of every server."
    )
    placement_rules = List(
        Dict(), config=True, help="More constraints per image or group: group/image, constraints."
    )

    labels = Dict(
        config=True,
        help="Labels of each server's service and of its task's container; values are "
        "templates ({raw_username}, {raw_servername}, {raw_image}).",
    )

    @default("extra_endpoint_spec")
    def _endpoint_default(self) -> dict[str, Any]:
        return {"mode": "dnsrr"}  # no virtual IP: the kernel may have no IPVS

    @default("extra_task_spec")
    def _task_default(self) -> dict[str, Any]:
        """Never started again by the swarm: on a lost node its task would start on another
        node, at an address the hub's proxy does not route to (DockerSpawner does not
        restart a server either); the server is reported missing instead."""
        return {"restart_policy": RestartPolicy(condition="none")}

    async def create_object(self) -> Any:
        # SwarmSpawner renders no templates: the labels are rendered here, at each start
        labels = self._render_templates(self.labels)
        self.extra_container_spec = {**self.extra_container_spec, "labels": labels}
        self.extra_create_kwargs = {**self.extra_create_kwargs, "labels": labels}
        groups = [group.name for group in self.user.groups]
        constraints = placement(
            self.placement_constraints, self.placement_rules, self.image, groups
        )
        self.extra_placement_spec = {**self.extra_placement_spec, "constraints": constraints}
        return await super().create_object()

    async def get_ip_and_port(self) -> tuple[str, int]:
        """The address of the node the service's task runs on."""
        task = await self.get_task()
        if task is None or not task.get("NodeID"):
            raise RuntimeError(f"service {self.service_name} has no task on a node")
        node = await self.docker("inspect_node", task["NodeID"])
        return node["Status"]["Addr"], self.port
