"""DockerSpawner on the host network, labelled for hubkeeper.

DockerSpawner assumes a bridge network (fixed port 8888, port bindings). With host
networking each server instead listens on its own free port on the configured address.
"""

from __future__ import annotations

from typing import Any

from dockerspawner import DockerSpawner
from jupyterhub.utils import random_port
from traitlets import Unicode, default


class HostNetworkDockerSpawner(DockerSpawner):
    server_address = Unicode(
        "127.0.0.1", config=True, help="Address the hub and proxy use to reach user servers."
    )

    @default("network_name")
    def _network_name_default(self) -> str:
        return "host"

    @default("use_internal_ip")
    def _use_internal_ip_default(self) -> bool:
        return True

    def template_namespace(self) -> dict[str, Any]:
        namespace = super().template_namespace()
        namespace["raw_image"] = self.image
        return namespace

    async def start(self) -> Any:
        self.port = random_port()
        return await super().start()

    async def get_ip_and_port(self) -> tuple[str, int]:
        return self.server_address, self.port
