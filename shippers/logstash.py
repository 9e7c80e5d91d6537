"""The Logstash adapter of the delivery contract (``shippers/delivery.py``): the Beats
(Lumberjack v2) protocol, windowed and compressed.

Each window is a window-size frame (``2W`` + count) and the events as JSON frames
(``2J`` + sequence + length + JSON), zlib-compressed into one ``2C`` frame. The receiver
answers ``2A`` + the sequence number acknowledged so far (``0`` is a keepalive while it
works). Only acknowledged events count as delivered; the rest of a window is sent again.
Each event carries ``@metadata._id`` and ``@metadata._index``, so a Logstash
``elasticsearch`` output with ``document_id => "%{[@metadata][_id]}"`` and
``action => "create"`` keeps indexing exactly once.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import zlib
from collections.abc import Sequence
from datetime import date

from hubkeeper.config import ShipperLogstashConfig
from hubkeeper.shippers.delivery import ItemResult, Unavailable
from hubkeeper.shippers.store import Record


def payload(record: Record) -> bytes:
    """The event's JSON with ``@metadata`` (``_id``, ``_index``) added in front."""
    meta = f'{{"@metadata":{{"_id":"{record.id}","_index":"{record.index}"}}'.encode()
    body = record.doc.strip()
    return meta + b"}" if body == b"{}" else meta + b"," + body[1:]


def encode_window(records: Sequence[Record], level: int) -> bytes:
    """A window frame and its events (one compressed frame unless ``level`` is 0)."""
    frames = b"".join(
        b"2J" + struct.pack(">II", seq, len(data)) + data
        for seq, data in enumerate((payload(record) for record in records), start=1)
    )
    window = b"2W" + struct.pack(">I", len(records))
    if level == 0:
        return window + frames
    packed = zlib.compress(frames, level)
    return window + b"2C" + struct.pack(">I", len(packed)) + packed


class ProtocolError(Exception):
    pass


class LogstashOutput:
    """One connection at a time to the first host that answers; reconnects on failure."""

    def __init__(self, config: ShipperLogstashConfig) -> None:
        self.config = config
        self._socket: socket.socket | None = None
        self._host = 0
        self._context: ssl.SSLContext | None = None
        if config.tls:
            self._context = ssl.create_default_context(cafile=config.ca_file)

    def install_templates(self) -> None:
        """Nothing to install: the Logstash pipeline owns its index settings."""

    def delete_expired(self, _today: date) -> list[str]:
        return []

    def bulk(self, records: Sequence[Record]) -> list[ItemResult]:
        """Send window by window; acknowledged events are 200, the rest 503 (sent again).
        Raises :class:`Unavailable` when nothing at all was acknowledged."""
        results: list[ItemResult] = []
        size = self.config.window_size
        for start in range(0, len(records), size):
            window = records[start : start + size]
            acked, error = self._send(window)
            results += [ItemResult(200)] * acked
            if acked < len(window):
                if not results:
                    raise Unavailable(error or "not acknowledged")
                results += [ItemResult(503, {"type": "not_acknowledged", "reason": error})] * (
                    len(records) - len(results)
                )
                break
        return results

    def _send(self, window: Sequence[Record]) -> tuple[int, str]:
        acked = 0
        try:
            connection = self._connect()
            connection.sendall(encode_window(window, self.config.compression_level))
            while acked < len(window):
                frame = _receive(connection, 6)
                if frame[:2] != b"2A":
                    raise ProtocolError(f"expected an ACK frame, got {frame[:2]!r}")
                (sequence,) = struct.unpack(">I", frame[2:])
                acked = max(acked, min(sequence, len(window)))  # 0 is a keepalive
            return acked, ""
        except (OSError, ProtocolError) as error:
            self.close()
            return acked, f"{type(error).__name__}: {error}"

    def _connect(self) -> socket.socket:
        if self._socket is not None:
            return self._socket
        problems = []
        hosts = self.config.hosts
        for turn in range(len(hosts)):
            address = hosts[(self._host + turn) % len(hosts)]
            host, _, port = address.rpartition(":")
            try:
                connection = socket.create_connection((host, int(port)), self.config.timeout)
                if self._context is not None:
                    connection = self._context.wrap_socket(connection, server_hostname=host)
            except OSError as error:
                problems.append(f"{address}: {type(error).__name__}")
                continue
            connection.settimeout(self.config.timeout)
            self._host = (self._host + turn) % len(hosts)
            self._socket = connection
            return connection
        raise ConnectionError("; ".join(problems))

    def close(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
            self._socket = None
            self._host += 1  # try the next host first


def _receive(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the receiver closed the connection")
        data += chunk
    return data
