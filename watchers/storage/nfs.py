"""An NFS server checked from the network side: a small ONC RPC client over TCP.

RFC 5531 (RPC v2: call and reply messages, record marking), RFC 1833 (portmapper v2
GETPORT), RFC 1813 (NFSv3 NULL and GETATTR; MOUNT v3 MNT and UMNT, appendix I). The
check asks the portmapper for the MOUNT and NFS ports, calls NFS NULL, gets the export's
root file handle with MNT, reads its attributes with GETATTR, and says UMNT. It needs no
NFS client in the kernel, so it tells "the server is down" from "this node's mount hangs".
"""

from __future__ import annotations

import os
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from hubkeeper.watchers.storage.logic import Check

T = TypeVar("T")
PORTMAP, MOUNT, NFS = 100000, 100005, 100003
IPPROTO_TCP = 6
AUTH_NONE, AUTH_SYS = 0, 1
CALLS = ("portmap", "null", "mount", "getattr")
_ACCEPT = {1: "PROG_UNAVAIL", 2: "PROG_MISMATCH", 3: "PROC_UNAVAIL", 4: "GARBAGE_ARGS",
           5: "SYSTEM_ERR"}  # fmt: skip
_MOUNT_STATUS = {1: "MNT3ERR_PERM", 2: "MNT3ERR_NOENT", 5: "MNT3ERR_IO", 13: "MNT3ERR_ACCES",
                 20: "MNT3ERR_NOTDIR", 22: "MNT3ERR_INVAL", 63: "MNT3ERR_NAMETOOLONG",
                 10004: "MNT3ERR_NOTSUPP", 10006: "MNT3ERR_SERVERFAULT"}  # fmt: skip
_NFS_STATUS = {1: "NFS3ERR_PERM", 2: "NFS3ERR_NOENT", 5: "NFS3ERR_IO", 13: "NFS3ERR_ACCES",
               70: "NFS3ERR_STALE", 10001: "NFS3ERR_BADHANDLE",
               10006: "NFS3ERR_SERVERFAULT", 10008: "NFS3ERR_JUKEBOX"}  # fmt: skip


class RpcError(Exception):
    """The server answered, but not with success (the server is up, the call failed)."""


# --- XDR (RFC 4506): just what these calls need -----------------------------------------


def uint(value: int) -> bytes:
    return struct.pack(">I", value)


def opaque(data: bytes) -> bytes:
    """Variable-length opaque data or a string: length, bytes, zero padding to 4."""
    return uint(len(data)) + data + b"\0" * (-len(data) % 4)


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def uint(self) -> int:
        if self.at + 4 > len(self.data):
            raise RpcError("reply too short")
        (value,) = struct.unpack_from(">I", self.data, self.at)
        self.at += 4
        return value

    def hyper(self) -> int:
        return self.uint() << 32 | self.uint()

    def opaque(self) -> bytes:
        size = self.uint()
        if self.at + size > len(self.data):
            raise RpcError("reply too short")
        value = self.data[self.at : self.at + size]
        self.at += size + (-size % 4)
        return value


def auth_sys(machine: str) -> bytes:
    """AUTH_SYS credentials of root (uid 0, gid 0), as ``showmount`` and mount send."""
    body = uint(int(time.time()) & 0xFFFFFFFF) + opaque(machine.encode()[:255])
    body += uint(0) + uint(0) + uint(0)  # uid, gid, no more groups
    return uint(AUTH_SYS) + opaque(body)


def call_message(xid: int, program: int, version: int, procedure: int, args: bytes,
                 credentials: bytes) -> bytes:  # fmt: skip
    """A CALL message (RFC 5531 section 9) in one last record fragment."""
    body = b"".join(map(uint, (xid, 0, 2, program, version, procedure)))
    body += credentials + uint(AUTH_NONE) + opaque(b"") + args
    return uint(0x80000000 | len(body)) + body


def parse_reply(xid: int, message: bytes) -> Reader:
    """The results of an accepted, successful reply; RpcError for anything else."""
    reader = Reader(message)
    if reader.uint() != xid or reader.uint() != 1:
        raise RpcError("reply does not match the call")
    if reader.uint() != 0:  # MSG_DENIED
        reason = "RPC_MISMATCH" if reader.uint() == 0 else f"AUTH_ERROR {reader.uint()}"
        raise RpcError(f"call denied: {reason}")
    reader.uint()  # verifier flavour
    reader.opaque()
    status = reader.uint()
    if status != 0:
        raise RpcError(f"call not accepted: {_ACCEPT.get(status, status)}")
    return reader


# --- a connection -----------------------------------------------------------------------


class Connection:
    """One TCP connection to an RPC program; every call shares one deadline."""

    def __init__(self, host: str, port: int, deadline: float) -> None:
        self.deadline = deadline
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            if os.geteuid() == 0:
                _bind_reserved(self.sock)  # servers may require a port below 1024
            self.sock.settimeout(self._left())
            self.sock.connect((host, port))
        except BaseException:
            self.sock.close()
            raise
        self.credentials = auth_sys(socket.gethostname())

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        return left

    def call(self, program: int, version: int, procedure: int, args: bytes = b"") -> Reader:
        xid = random.getrandbits(32)
        self.sock.settimeout(self._left())
        self.sock.sendall(call_message(xid, program, version, procedure, args, self.credentials))
        return parse_reply(xid, self._record())

    def _record(self) -> bytes:
        """A whole record: fragments until the one marked last."""
        message = b""
        while True:
            (header,) = struct.unpack(">I", self._exactly(4))
            message += self._exactly(header & 0x7FFFFFFF)
            if header & 0x80000000:
                return message

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            self.sock.settimeout(self._left())
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("connection closed by the server")
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


def _bind_reserved(sock: socket.socket) -> None:
    for port in random.sample(range(600, 1024), 40):
        try:
            sock.bind(("", port))
            return
        except OSError:
            continue


# --- the check --------------------------------------------------------------------------


@dataclass(frozen=True)
class NfsCheck:
    """``up``: NFS NULL and a GETATTR of the export root succeeded; ``down``: the server did
    not answer (refused, timed out); ``error``: it answered, but a call failed."""

    state: str
    calls: dict[str, Check] = field(default_factory=dict)
    root_fileid: int | None = None

    @property
    def up(self) -> bool:
        return self.state == "up"


def getport(host: str, port: int, program: int, deadline: float) -> int:
    connection = Connection(host, port, deadline)
    try:
        args = b"".join(map(uint, (program, 3, IPPROTO_TCP, 0)))
        found = connection.call(PORTMAP, 2, 3, args).uint()
    finally:
        connection.close()
    if found == 0:
        raise RpcError(f"program {program} version 3 is not registered with the portmapper")
    return found


def check(host: str, export: str, portmap_port: int = 111, timeout: float = 5.0) -> NfsCheck:
    """Portmapper, NFS NULL, MOUNT MNT, NFS GETATTR of the export root, MOUNT UMNT."""
    deadline = time.monotonic() + timeout
    calls: dict[str, Check] = {}
    fileid = None

    def timed(name: str, action: Callable[[], T]) -> T:
        started = time.monotonic()
        try:
            value = action()
        except (OSError, RpcError) as exc:
            calls[name] = Check(False, time.monotonic() - started, _describe(exc))
            raise
        calls[name] = Check(True, time.monotonic() - started)
        return value

    try:
        ports = timed(
            "portmap",
            lambda: (getport(host, portmap_port, NFS, deadline),
                     getport(host, portmap_port, MOUNT, deadline)),
        )  # fmt: skip
        nfs = Connection(host, ports[0], deadline)
        try:
            timed("null", lambda: nfs.call(NFS, 3, 0))
            handle = timed("mount", lambda: _mount(host, ports[1], export, deadline))
            fileid = timed("getattr", lambda: _getattr(nfs, handle))
        finally:
            nfs.close()
    except (OSError, RpcError):
        answered = "null" in calls and calls["null"].ok
        return NfsCheck("error" if answered else "down", calls, fileid)
    return NfsCheck("up", calls, fileid)


def _mount(host: str, port: int, export: str, deadline: float) -> bytes:
    """The export's root file handle (MNT), then UMNT: the server keeps no entry for us."""
    connection = Connection(host, port, deadline)
    try:
        reply = connection.call(MOUNT, 3, 1, opaque(export.encode()))
        status = reply.uint()
        if status != 0:
            raise RpcError(f"MNT {export}: {_MOUNT_STATUS.get(status, status)}")
        handle = reply.opaque()
        connection.call(MOUNT, 3, 3, opaque(export.encode()))
    finally:
        connection.close()
    return handle


def _getattr(connection: Connection, handle: bytes) -> int:
    """GETATTR of a file handle: the file id of the root (fattr3, RFC 1813 section 2.6)."""
    reply = connection.call(NFS, 3, 1, opaque(handle))
    status = reply.uint()
    if status != 0:
        raise RpcError(f"GETATTR: {_NFS_STATUS.get(status, status)}")
    for _ in range(5):  # type, mode, nlink, uid, gid
        reply.uint()
    reply.hyper(), reply.hyper()  # size, used
    reply.uint(), reply.uint()  # rdev
    reply.hyper()  # fsid
    return reply.hyper()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RpcError):
        return str(exc)
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    return f"{type(exc).__name__}: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
