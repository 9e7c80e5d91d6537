"""The HTTP(S) endpoint every daemon serves: ``/metrics``, ``/healthz`` and extra routes.

With ``tls_cert_file`` it speaks TLS 1.2 or newer only; with ``tls_client_ca_file`` it also
requires a client certificate signed by that CA (mutual TLS). The TLS handshake runs in the
request's thread, so a slow or refused client never holds up the others.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hmac
import os
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, generate_latest

from hubkeeper.config import EndpointConfig
from hubkeeper.log import get_logger
from hubkeeper.redact import Secret

Response = tuple[int, str, bytes]  # status, content type, body
Health = Callable[[], tuple[bool, str]]
Route = Callable[[str, dict[str, list[str]]], Response]
#: A POST handler: called with the path and the request body.
Action = Callable[[str, bytes], Response]

TEXT = "text/plain; charset=utf-8"
#: The text exposition format, named by its own version: prometheus-client's
#: CONTENT_TYPE_LATEST says 0.0.4 or 1.0.0 depending on its release, over the same text.
EXPOSITION = "text/plain; version=0.0.4; charset=utf-8"
GZIP_MIN_BYTES = 1024  # smaller bodies are sent as they are
GZIP_LEVEL = 1  # a 1.25 MB scrape becomes about 58 KB in about 2 ms
REQUEST_TIMEOUT = 30.0  # seconds a connection may stall (handshake included)
MAX_BODY = 65536  # bytes of a POST body (actions take small JSON documents)
log = get_logger(__name__)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` value allows gzip (``gzip;q=0`` refuses it, ``*`` allows
    it unless gzip is named)."""
    weights: dict[str, float] = {}
    for item in (accept_encoding or "").split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[coding.lower()] = weight
    weight = weights.get("gzip", weights.get("x-gzip", weights.get("*", 0.0)))
    return weight > 0


def encode(body: bytes, accept_encoding: str | None) -> tuple[bytes, str | None]:
    """The body to send and its ``Content-Encoding`` (None: as it is)."""
    if len(body) < GZIP_MIN_BYTES or not accepts_gzip(accept_encoding):
        return body, None
    return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0), "gzip"


def client_host(listen: str) -> str:
    """Where a client on this host reaches a listener bound to ``listen``."""
    return "127.0.0.1" if listen in ("0.0.0.0", "::", "") else listen


def endpoint_url(config: EndpointConfig, path: str) -> str:
    """The endpoint's URL for a client on this host (``https`` when TLS is on)."""
    scheme = "https" if config.tls_cert is not None else "http"
    return f"{scheme}://{client_host(config.listen)}:{config.port}{path}"


def _load_chain(context: ssl.SSLContext, cert: Secret, key: Secret | None) -> None:
    """Load a certificate chain and key held in memory (ssl only reads them from a path):
    through an anonymous in-memory file, so the key is never written to disk."""
    pem = "\n".join(part.reveal() for part in (key, cert) if part is not None) + "\n"
    fd = os.memfd_create("hubkeeper-tls", os.MFD_CLOEXEC)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(pem)
        handle.flush()
        context.load_cert_chain(f"/proc/self/fd/{fd}")


def server_context(config: EndpointConfig) -> ssl.SSLContext | None:
    """The server side of TLS, or None for plain HTTP."""
    if config.tls_cert is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, config.tls_cert, config.tls_key)
    if config.tls_client_ca is not None:
        context.load_verify_locations(cadata=config.tls_client_ca.reveal())
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(config: EndpointConfig) -> ssl.SSLContext:
    """How hubkeeper's own clients verify the endpoint: ``tls_ca_file``, else the system's
    trust store; with the client certificate when the endpoint requires one."""
    context = ssl.create_default_context(
        cadata=config.tls_ca.reveal() if config.tls_ca is not None else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.tls_client_cert is not None:
        _load_chain(context, config.tls_client_cert, config.tls_client_key)
    return context


class EndpointServer:
    """A threaded HTTP(S) server on ``config.listen:config.port`` (port 0 picks a free one:
    for tests only; a config file must name a port, since scrapers find the daemon by it).

    ``/healthz`` is always open; everything else needs the bearer token or basic-auth
    credentials when the config has any. ``routes`` maps a path prefix (e.g. ``"/prtg/"``)
    to a handler called with the path and the parsed query string; ``actions`` likewise maps
    prefixes to POST handlers, called with the path and the body. ``metrics``, if given,
    renders ``/metrics`` instead of the registry (for exporters with a faster renderer).
    """

    def __init__(
        self,
        config: EndpointConfig,
        registry: CollectorRegistry,
        health: Health,
        routes: dict[str, Route] | None = None,
        metrics: Callable[[], bytes] | None = None,
        actions: dict[str, Action] | None = None,
    ) -> None:
        self._config = config
        self._registry = registry
        self._metrics = metrics or (lambda: generate_latest(registry))
        self._health = health
        self._tls = server_context(config)  # fails here, before binding, on a bad certificate
        # Longest prefix first, so "/prtg/containers/" wins over "/prtg/".
        self._routes = sorted((routes or {}).items(), key=lambda item: -len(item[0]))
        self._actions = sorted((actions or {}).items(), key=lambda item: -len(item[0]))
        self._challenges: list[str] = []  # WWW-Authenticate values; empty means no auth configured
        if config.token is not None:
            self._challenges.append('Bearer realm="hubkeeper"')
        if config.basic_auth_user is not None or config.basic_auth_password is not None:
            self._challenges.append('Basic realm="hubkeeper"')  # fails closed if half-set
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the free one picked when a test asked for port 0)."""
        if self._server is None:
            raise RuntimeError("endpoint server is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and serve in a background thread."""
        endpoint = self

        class Handler(_Handler):
            server_endpoint = endpoint

        self._server = _Server((self._config.listen, self._config.port), Handler, self._tls)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},  # how quickly stop() takes effect
            name="hubkeeper-endpoint",
            daemon=True,
        )
        self._thread.start()
        log.info(
            "endpoint listening",
            listen=self._config.listen,
            port=self.port,
            tls=self._tls is not None,
            client_certificates=self._config.tls_client_ca is not None,
        )

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is None or self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

    # --- request handling (called from the server's threads) -------------------------

    def _respond(self, raw_path: str, authorization: str | None, body: bytes | None) -> Response:
        """The answer to a GET (``body`` None) or a POST."""
        parts = urlsplit(raw_path)
        path = parts.path
        if body is not None:
            if not self._authorized(authorization):
                return 401, TEXT, b"unauthorized\n"
            for prefix, action in self._actions:
                if path.startswith(prefix):
                    return action(path, body)
            return 404, TEXT, b"not found\n"
        if path == "/healthz":
            healthy, text = self._health()
            return (200 if healthy else 503), TEXT, text.encode()
        if not self._authorized(authorization):
            return 401, TEXT, b"unauthorized\n"
        if path == "/metrics":
            return 200, EXPOSITION, self._metrics()
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


class _Server(ThreadingHTTPServer):
    """Accepts connections; with TLS, each is wrapped here and its handshake runs in
    :meth:`_Handler.setup`, in the connection's own thread."""

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        tls: ssl.SSLContext | None,
    ) -> None:
        self.tls = tls
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        if self.tls is None:
            return connection, address
        wrapped = self.tls.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        return wrapped, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A refused handshake or a dropped connection: one log line, no traceback on stderr."""
        error = sys.exc_info()[1]
        log.info("endpoint_connection_failed", client=client_address[0], error=str(error))


class _Handler(BaseHTTPRequestHandler):
    server_endpoint: EndpointServer
    timeout = REQUEST_TIMEOUT

    def setup(self) -> None:
        super().setup()  # applies the timeout, to the handshake too
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def do_GET(self) -> None:
        self._answer(None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= MAX_BODY:
            self.send_error(413)
            return
        self._answer(self.rfile.read(length))

    def _answer(self, request_body: bytes | None) -> None:
        endpoint = self.server_endpoint
        try:
            status, content_type, body = endpoint._respond(
                self.path, self.headers.get("Authorization"), request_body
            )
        except Exception:
            log.exception("endpoint request failed", path=self.path)
            status, content_type, body = 500, TEXT, b"internal error\n"
        compressible = len(body) >= GZIP_MIN_BYTES
        body, encoding = encode(body, self.headers.get("Accept-Encoding"))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if compressible:
            self.send_header("Vary", "Accept-Encoding")
        if encoding is not None:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(body)))
        if status == 401:
            for challenge in endpoint._challenges:
                self.send_header("WWW-Authenticate", challenge)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Request lines go to structlog at debug level (never the headers)."""
        log.debug("endpoint request", client=self.client_address[0], message=format % args)
