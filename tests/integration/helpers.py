"""Small helpers shared by the integration tests."""

import contextlib
import functools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

from hubkeeper.deploy.stack import Stack, to_toml, wait_for
from hubkeeper.hubapi import HubAPIError, HubClient
from hubkeeper.loader import load
from hubkeeper.nginx import GENERATION_HEADER, Nginx


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


@functools.cache
def database_file(config_path: Path) -> str:
    """The stack's SQLite file (read once: the census asks every 50 ms)."""
    return load(config_path).jupyterhub.database_url.removeprefix("sqlite:///")


def running_hubs(config_path: Path) -> set[str]:
    """Names of this stack's hub instances whose JupyterHub has the database open now (a
    warm standby, which waits before it opens it, does not count)."""
    marker = f"HUBKEEPER_CONFIG={config_path}".encode()
    database = database_file(config_path)
    names = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            if marker not in environ:
                continue
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if not any(os.readlink(fd) == database for fd in (proc / "fd").iterdir()):
                continue
        except OSError:
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


@dataclass
class Sample:
    at: float
    url: str
    ok: bool
    generation: str | None


@dataclass(eq=False)
class Load(threading.Thread):
    """GETs through NGINX at ``rate`` per second, in turn: the hub API, then each user's
    server; at most ``limit`` requests. Each request has its own thread (up to 64 at once),
    so one that hangs (2 s timeout) does not hold back the ones after it."""

    stack: Stack
    users: tuple[str, ...] = ("alice",)
    rate: float = 20.0
    limit: int = 20_000
    samples: list[Sample] = field(default_factory=list)
    halt: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        super().__init__(daemon=True)
        self._local = threading.local()
        self._lock = threading.Lock()

    @property
    def urls(self) -> list[str]:
        base = self.stack.public_url
        return [f"{base}/hub/api/", *[f"{base}/user/{user}/api/status" for user in self.users]]

    def _get(self, url: str, headers: dict[str, str]) -> None:
        session = getattr(self._local, "session", None) or requests.Session()
        self._local.session = session
        started = time.time()
        try:
            response = session.get(url, headers=headers, timeout=2)
            ok = response.status_code == 200
            generation = response.headers.get(GENERATION_HEADER)
        except requests.RequestException:
            ok, generation = False, None
        with self._lock:
            self.samples.append(Sample(started, url, ok, generation))

    def run(self) -> None:
        token = self.stack.client().config.token.reveal()
        headers = {"Authorization": f"token {token}"}
        urls, next_at = self.urls, time.monotonic()
        with ThreadPoolExecutor(max_workers=64) as pool:
            for index in range(self.limit):
                if self.halt.is_set():
                    return
                pool.submit(self._get, urls[index % len(urls)], headers)
                next_at += 1 / self.rate
                time.sleep(max(0.0, next_at - time.monotonic()))

    def stop(self) -> list[Sample]:
        """Stop sending; wait for the requests in flight; the samples in time order."""
        self.halt.set()
        self.join(10)
        with self._lock:
            return sorted(self.samples, key=lambda sample: sample.at)

    def failed(self, hub_api: bool, since: float = 0.0) -> list[Sample]:
        """Failed requests since ``since``: to the hub API, or to the user servers."""
        return [
            s for s in self.samples
            if not s.ok and s.at >= since and ("/hub/api/" in s.url) == hub_api
        ]  # fmt: skip


# --- NGINX's config broken by hand -------------------------------------------------------------

#: an unknown directive, as an operator's typo or a module NGINX was not built with
UNKNOWN_DIRECTIVE = "hubkeeper_broken_by_hand on;"


def break_nginx_config(nginx: Nginx, line: str = UNKNOWN_DIRECTIVE) -> str:
    """Edit NGINX's live config in place as a bad hand edit would (``line`` added at the
    top level: by default an unknown directive; ``"server {"`` is a syntax error), then
    reload NGINX as `systemctl reload nginx` does, by SIGHUP to its master. NGINX refuses
    the file, logs an ``[emerg]`` line in its error.log and keeps serving the config it had
    loaded. Returns the broken text. For a stack: ``break_nginx_config(stack.nginx)``.

    The watcher replaces the file within ``watcher.nginx_check_interval`` (then
    :func:`nginx_config_healed`), or a failover's switch does, whichever comes first; put
    nothing back by hand: after a failover an old copy would point NGINX at the old hub."""
    broken = nginx.conf_path.read_text().replace("events {", f"{line}\nevents {{", 1)
    nginx.conf_path.write_text(broken)
    os.kill(int(nginx.pid_path.read_text().strip()), signal.SIGHUP)
    return broken


def nginx_config_healed(nginx: Nginx) -> bool:
    """The live config passes ``nginx -t`` again and names the generation NGINX serves."""
    live = nginx.live()
    return nginx.live_error() is None and live is not None and live[1] == nginx.served_generation()


# --- running the culler -----------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
CULL_TIMEOUT = 6.0  # the idle timeout of every test culler, seconds
CULLER_TOKEN = "secrets/services/hubkeeper-culler.token"


@dataclass
class CullRun:
    code: int
    events: list[dict]
    output: str

    def decisions(self, kind: str = "server") -> dict[tuple[str, str | None], dict]:
        return {
            (e["user"], e["server"]): e
            for e in self.events
            if e.get("event") == "cull_decision" and e["kind"] == kind
        }

    def outcome(self, user: str, server: str | None = "", kind: str = "server") -> tuple:
        event = self.decisions(kind)[(user, server)]
        return event["action"], event["reason"], event["result"]


def tokens(stack: Stack) -> list[str]:
    folder = Path(stack.config.jupyterhub.services_token_dir or "")
    return [path.read_text().strip() for path in folder.glob("*.token")]


def cull(stack: Stack, name: str, *args: str, hub: dict | None = None, **culler: object) -> CullRun:
    """``hubkeeper cull --once`` with the stack's config and this ``[culler]`` section."""
    path = culler_config(stack, name, hub, **culler)
    command = [sys.executable, "-m", "hubkeeper.cli", "cull", "--once", "--config", str(path)]
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=90, cwd=ROOT)
    output = done.stdout + done.stderr
    for token in tokens(stack):
        assert token not in output, "a hub token was logged"
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return CullRun(done.returncode, events, output)


def culler_config(stack: Stack, name: str, hub: dict | None = None, **culler: object) -> Path:
    """The stack's config with a test culler's ``[culler]`` section, as ``NAME.toml``."""
    data = tomllib.loads(stack.config_path.read_text())
    data["hub"] = {**data["hub"], **(hub or {})}
    data["culler"] = {
        "hub_token_file": CULLER_TOKEN,
        "state_file": str(stack.workdir / f"{name}.json"),
        "timeout": CULL_TIMEOUT,
        "busy_min_span": 1.0,
        "busy_window": 5.0,
        "orphans": "off",
        **culler,
    }
    path = stack.workdir / f"{name}.toml"
    path.write_text(to_toml(data))
    return path
