"""Small helpers shared by the integration tests."""

import contextlib
import re
import threading
import time
from pathlib import Path

import requests

from hubkeeper.deploy.stack import Stack, wait_for
from hubkeeper.hubapi import HubAPIError, HubClient


def series(text: str, metric: str, /, **labels: str) -> list[float]:
    """Values of ``metric`` whose labels include ``labels``."""
    values = []
    for line in text.splitlines():
        if not line.startswith(metric + "{") and not line.startswith(metric + " "):
            continue
        head, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', head))
        if all(found.get(key) == wanted for key, wanted in labels.items()):
            values.append(float(value))
    return values


def user_containers(stack: Stack, user: str) -> list:
    label = f"{stack.config.labels.user}={user}"
    return stack.docker.containers.list(all=True, filters={"label": label})


def start_and_wait(client: HubClient, user: str, options: dict | None = None) -> dict:
    client.start_server(user, options=options)

    def ready() -> bool:
        server = client.user(user)["servers"].get("")
        return bool(server and server["ready"])

    wait_for(ready, 60, f"{user}'s server")
    return client.user(user)["servers"][""]


def start_frozen(stack: Stack, client: HubClient, user: str) -> None:
    """Start the user's server and pause its container as soon as it starts: the spawn
    stays pending (until the hub's start timeout, or until someone stops it)."""
    events = stack.docker.api.events(
        decode=True,
        since=int(time.time()) - 1,  # without it, an "until" replays earlier runs' events
        until=int(time.time()) + 30,
        filters={"event": "start", "label": f"{stack.config.labels.user}={user}"},
    )

    def start() -> None:
        with contextlib.suppress(HubAPIError):  # it answers when the spawn is interrupted
            client.start_server(user)

    threading.Thread(target=start, daemon=True).start()
    try:
        started = next(iter(events))
    finally:
        events.close()
    stack.docker.api.pause(started["id"])


def stop_and_wait(client: HubClient, user: str) -> None:
    client.stop_server(user)
    wait_for(lambda: "" not in client.user(user)["servers"], 60, f"{user}'s server to stop")


def server_status(stack: Stack, user: str) -> requests.Response:
    """GET /user/<user>/api/status through NGINX, authenticated as the operator."""
    token = stack.client().config.token.reveal()
    return requests.get(
        f"{stack.public_url}/user/{user}/api/status",
        headers={"Authorization": f"token {token}"},
        timeout=10,
    )


def running_hubs(config_path: Path) -> set[str]:
    """Names of the JupyterHub processes (not their proxies) of this stack that run now."""
    marker = f"HUBKEEPER_CONFIG={config_path}".encode()
    names = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"jupyterhub" not in cmdline or b"configurable-http-proxy" in cmdline:
            continue
        if state == "Z" or marker not in environ:
            continue
        for item in environ:
            if item.startswith(b"HUBKEEPER_HUB_INSTANCE="):
                names.add(item.split(b"=", 1)[1].decode())
    return names


class HubCensus(threading.Thread):
    """Samples the running hub processes until stopped; ``most`` is the peak count."""

    def __init__(self, config_path: Path) -> None:
        super().__init__(daemon=True)
        self.config_path = config_path
        self.most = 0
        self.seen: list[set[str]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.05):
            hubs = running_hubs(self.config_path)
            self.most = max(self.most, len(hubs))
            if not self.seen or self.seen[-1] != hubs:
                self.seen.append(hubs)

    def stop(self) -> None:
        self.halt.set()
        self.join(5)
