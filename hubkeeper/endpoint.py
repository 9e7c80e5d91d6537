"""The HTTP endpoint every daemon serves: ``/metrics``, ``/healthz`` and extra routes."""

from __future__ import annotations

import base64
import binascii
import hmac
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from hubkeeper.config import EndpointConfig
from hubkeeper.log import get_logger

Response = tuple[int, str, bytes]  # status, content type, body
Health = Callable[[], tuple[bool, str]]
Route = Callable[[str, dict[str, list[str]]], Response]

TEXT = "text/plain; charset=utf-8"
log = get_logger(__name__)


class EndpointServer:
    """A threaded HTTP server on ``config.listen:config.port`` (port 0 picks a free one).

    ``/healthz`` is always open; everything else needs the bearer token or basic-auth
    credentials when the config has any. ``routes`` maps a path prefix (e.g. ``"/prtg/"``)
    to a handler called with the path and the parsed query string. ``metrics``, if given,
    renders ``/metrics`` instead of the registry (for exporters with a faster renderer).
    """

    def __init__(
        self,
        config: EndpointConfig,
        registry: CollectorRegistry,
        health: Health,
        routes: dict[str, Route] | None = None,
        metrics: Callable[[], bytes] | None = None,
    ) -> None:
        self._config = config
        self._registry = registry
        self._metrics = metrics or (lambda: generate_latest(registry))
        self._health = health
        # Longest prefix first, so "/prtg/containers/" wins over "/prtg/".
        self._routes = sorted((routes or {}).items(), key=lambda item: -len(item[0]))
        self._challenges: list[str] = []  # WWW-Authenticate values; empty means no auth configured
        if config.token is not None:
            self._challenges.append('Bearer realm="hubkeeper"')
        if config.basic_auth_user is not None or config.basic_auth_password is not None:
            self._challenges.append('Basic realm="hubkeeper"')  # fails closed if half-set
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when the config asked for port 0)."""
        if self._server is None:
            raise RuntimeError("endpoint server is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and serve in a background thread."""
        endpoint = self

        class Handler(_Handler):
            server_endpoint = endpoint

        self._server = ThreadingHTTPServer((self._config.listen, self._config.port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},  # how quickly stop() takes effect
            name="hubkeeper-endpoint",
            daemon=True,
        )
        self._thread.start()
        log.info("endpoint listening", listen=self._config.listen, port=self.port)

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is None or self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

    # --- request handling (called from the server's threads) -------------------------

    def _respond(self, raw_path: str, authorization: str | None) -> Response:
        parts = urlsplit(raw_path)
        path = parts.path
        if path == "/healthz":
            healthy, text = self._health()
            return (200 if healthy else 503), TEXT, text.encode()
        if not self._authorized(authorization):
            return 401, TEXT, b"unauthorized\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, self._metrics()
        for prefix, route in self._routes:
            if path.startswith(prefix):
                return route(path, parse_qs(parts.query))
        return 404, TEXT, b"not found\n"

    def _authorized(self, authorization: str | None) -> bool:
        if not self._challenges:
            return True
        scheme, _, credentials = (authorization or "").partition(" ")
        credentials = credentials.strip()
        token = self._config.token
        if scheme.lower() == "bearer" and token is not None:
            return _equal(credentials, token.reveal())
        user, password = self._config.basic_auth_user, self._config.basic_auth_password
        if scheme.lower() == "basic" and user is not None and password is not None:
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return False
            given_user, _, given_password = decoded.partition(":")
            # Both comparisons always run, so timing does not tell which one failed.
            return _equal(given_user, user) & _equal(given_password, password.reveal())
        return False


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class _Handler(BaseHTTPRequestHandler):
    server_endpoint: EndpointServer

    def do_GET(self) -> None:
        endpoint = self.server_endpoint
        try:
            status, content_type, body = endpoint._respond(
                self.path, self.headers.get("Authorization")
            )
        except Exception:
            log.exception("endpoint request failed", path=self.path)
            status, content_type, body = 500, TEXT, b"internal error\n"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == 401:
            for challenge in endpoint._challenges:
                self.send_header("WWW-Authenticate", challenge)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Request lines go to structlog at debug level (never the headers)."""
        log.debug("endpoint request", client=self.client_address[0], message=format % args)
