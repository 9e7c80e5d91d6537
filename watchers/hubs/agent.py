"""``hubkeeper agent``: the leading watcher's hands on another host, behind a fencing check.

When hubs and NGINX run on hosts other than the watcher's, the watcher asks the agent on
each host to act there: run a hub instance's start/stop/warm/retire command, check or
switch that host's NGINX. Every request carries the fencing token (the lease generation,
watchers/hubs/lease.py) of the watcher that sent it. The agent keeps the highest token it
has seen in a file and refuses anything older, and it runs one request at a time, checked
and done under one lock: a former leader that wakes up after a pause cannot undo what the
new leader did, whatever its requests' timing.

Requests (POST, JSON body, bearer token of ``[agent.endpoint]``):
``/v1/token`` ``{"token"}`` (a new leader announces itself);
``/v1/hubs/NAME/ACTION`` ``{"token"}``;
``/v1/nginx/check`` and ``/v1/nginx/switch`` ``{"token", "hub", "generation"}``;
``/v1/nginx/repair`` ``{"token", "hub", "generation"}`` (a live config ``nginx -t``
refuses, replaced by the generated one); ``/v1/nginx/rollback`` ``{"token"}``.
``GET /v1/nginx`` tells what NGINX serves and the highest token; with ``?hub=NAME&
generation=N`` also whether the live config passes ``nginx -t`` and is the one rendered for
them (``config``: ``error``, ``generated``).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hubkeeper.config import Config, ConfigError
from hubkeeper.endpoint import Response
from hubkeeper.files import write_atomically
from hubkeeper.log import get_logger
from hubkeeper.nginx import Nginx, NginxError
from hubkeeper.watchers.hubs.commands import HUB_ACTIONS, run_command

log = get_logger(__name__)
JSON = "application/json"


class Refused(Exception):
    """The request's fencing token is older than one this host has seen."""


def admits(highest: int, token: int) -> bool:
    """Only the newest leader's requests (or a newer one's) act."""
    return token >= highest


class FencingGate:
    """The highest fencing token seen here, in a file so a restart forgets nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def highest(self) -> int:
        try:
            return int(self.path.read_text(encoding="utf-8").strip() or 0)
        except FileNotFoundError:
            return 0

    @contextlib.contextmanager
    def admit(self, token: int) -> Iterator[None]:
        """Run the body for ``token`` unless it is stale; one body at a time."""
        with self._lock:
            highest = self.highest()
            if not admits(highest, token):
                raise Refused(f"fencing token {token} is older than {highest}")
            if token > highest:
                write_atomically(self.path, str(token).encode())
                log.warning("fencing_token_raised", generation=token, was=highest)
            yield


def answer(status: int, document: dict[str, Any]) -> Response:
    return status, JSON, json.dumps(document).encode()


class Agent:
    def __init__(self, config: Config, config_path: Path) -> None:
        self.config = config
        self.section = config.agent
        self.config_path = config_path.resolve()
        self.gate = FencingGate(Path(self.section.fencing_file))
        self.hubs = {name: config.jupyterhub.instance(name) for name in self.section.hubs}
        self.nginx = Nginx(config.nginx, Path(config.nginx.prefix)) if self.section.nginx else None

    def handle(self, path: str, body: bytes) -> Response:
        """A POST: parsed, checked against the gate, then done."""
        try:
            request = json.loads(body)
            token = int(request["token"])
        except (ValueError, KeyError, TypeError):
            return answer(400, {"error": "expected a JSON object with an integer token"})
        parts = path.strip("/").split("/")
        try:
            with self.gate.admit(token):
                return self._act(parts, request)
        except Refused as refused:
            log.error("request_refused", path=path, generation=token, reason=str(refused))
            return answer(409, {"error": str(refused)})

    def _act(self, parts: list[str], request: dict[str, Any]) -> Response:
        watcher = self.config.watcher
        match parts:
            case ["v1", "token"]:
                return answer(200, {"token": self.gate.highest()})
            case ["v1", "hubs", name, action] if name in self.hubs and action in HUB_ACTIONS:
                timeout = (
                    watcher.start_timeout if action in ("start", "warm") else watcher.fence_timeout
                )
                argv = getattr(self.hubs[name], f"{action}_command")
                ok = run_command(argv, timeout, f"{action} {name}", self.config_path)
                return answer(200 if ok else 500, {"ok": ok})
            case ["v1", "nginx", step] if self.nginx is not None:
                return self._nginx(self.nginx, step, request)
        return answer(404, {"error": "no such action on this host"})

    def _nginx(self, nginx: Nginx, step: str, request: dict[str, Any]) -> Response:
        try:
            if step == "rollback":
                nginx.rollback()
                return answer(200, {"live": nginx.live()})
            hub = self.config.jupyterhub.instance(str(request["hub"]))
            generation = int(request["generation"])
            if step == "check":
                candidate = nginx.render(hub, generation)
                nginx.check_new_listens(candidate)
                nginx.validate(candidate).unlink()
                return answer(200, {"ok": True})
            if step == "repair":
                kept = nginx.repair(hub, generation, self.config.watcher.confirm_timeout)
                log.warning("nginx_config_repaired", active=hub.name, generation=generation)
                return answer(200, {"kept": kept})
            if step == "switch":
                seconds = nginx.switch(hub, generation, self.config.watcher.confirm_timeout)
                log.warning("nginx_switched", active=hub.name, generation=generation)
                return answer(200, {"confirm_seconds": seconds})
        except NginxError as error:
            return answer(502, {"error": str(error)})
        return answer(404, {"error": f"no NGINX step {step!r}"})

    def live(self, _path: str, query: dict[str, list[str]]) -> Response:
        live = self.nginx.live() if self.nginx is not None else None
        document: dict[str, Any] = {"nginx": live, "token": self.gate.highest()}
        if self.nginx is not None and "hub" in query:
            try:
                hub = self.config.jupyterhub.instance(query["hub"][0])
                generation = int(query["generation"][0])
            except (KeyError, ValueError, ConfigError):
                return answer(400, {"error": "expected hub=NAME (configured) and generation=N"})
            error, generated = self.nginx.check_live(hub, generation)
            document["config"] = {"error": error, "generated": generated}
        return answer(200, document)

    def healthz(self) -> tuple[bool, str]:
        return True, f"fencing token {self.gate.highest()}"
