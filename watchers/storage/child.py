"""The only code that touches a notebook filesystem: run as its own process, never imported.

``python -I -S child.py probe ROOT CANARY_DIR NAME``: one probe; ``... scan HOMES``: the
usage scanner, which walks for as long as each line it reads on stdin says (seconds).
Both write JSON lines to stdout. A hung filesystem leaves this process blocked in the
kernel; the daemon that started it never waits for it (see ``probe.py``). Only the standard
library, so that the process starts in tens of milliseconds.
"""

import contextlib
import errno
import json
import os
import sys
import time
from collections.abc import Callable


def emit(record: dict[str, object]) -> None:
    os.write(1, (json.dumps(record) + "\n").encode())


def failure(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "EIO")
    return f"{name}: {exc.strerror or exc}"


def step(op: str, action: Callable[[], dict[str, object] | None]) -> dict[str, object] | None:
    """Run one operation between a start and an end line; its result, or None if it failed."""
    emit({"op": op, "phase": "start"})
    started = time.monotonic()
    try:
        result = action()
    except OSError as exc:
        emit({"op": op, "ok": False, "seconds": time.monotonic() - started, "error": failure(exc)})
        return None
    emit({"op": op, "ok": True, "seconds": time.monotonic() - started, **(result or {})})
    return result if result is not None else {}


def probe(root: str, canary_dir: str, name: str) -> None:
    if step("stat", lambda: {"mode": os.stat(root).st_mode}) is None:
        return

    def capacity() -> dict[str, object]:
        v = os.statvfs(root)
        return {
            "size_bytes": v.f_blocks * v.f_frsize,
            "free_bytes": v.f_bavail * v.f_frsize,
            "inodes": v.f_files,
            "free_inodes": v.f_favail,
        }

    step("statvfs", capacity)
    folder = os.path.join(root, canary_dir)
    path = os.path.join(folder, f"canary-{name}")
    nonce = f"{time.time_ns()} {os.getpid()}\n".encode()
    handle: list[int] = []

    def write() -> None:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        handle.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        if os.write(handle[0], nonce) != len(nonce):
            raise OSError(errno.EIO, "short write")

    def fsync() -> None:
        try:
            os.fsync(handle[0])
        finally:
            os.close(handle.pop())

    def read() -> None:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            if os.read(descriptor, 4096) != nonce:
                raise OSError(errno.EIO, "the canary read back differs from what was written")
        finally:
            os.close(descriptor)

    if step("write", write) is not None and step("fsync", fsync) is not None:
        step("read", read)
    while handle:
        os.close(handle.pop())

    def remove() -> None:
        with contextlib.suppress(FileNotFoundError):  # the write failed before creating it
            os.unlink(path)

    step("remove", remove)


def scan(homes: str) -> None:
    """Walk every home below ``homes`` in turns of the given seconds; report each home's
    disk usage (allocated blocks, as du) when its walk is complete, and each full pass."""
    pending: list[str] = []  # homes left in this pass
    stack: list[str] = []  # folders left in the current home
    current, total, entries = None, 0, 0
    for line in sys.stdin:
        deadline = time.monotonic() + float(line)
        done: dict[str, int] = {}
        passed, homes_seen = False, None  # homes_seen: every home, when a pass starts
        while time.monotonic() < deadline:
            if current is None:
                if not pending:
                    if passed:
                        break  # at most one full pass per turn
                    try:
                        pending = sorted(
                            (
                                e.name
                                for e in os.scandir(homes)
                                if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
                            ),
                            reverse=True,
                        )
                    except OSError as exc:
                        emit({"error": failure(exc)})
                        break
                    passed, homes_seen = True, sorted(pending)
                    if not pending:
                        break
                current, total = pending.pop(), 0
                stack = [os.path.join(homes, current)]
            if not stack:
                done[current] = total
                current = None
                continue
            folder = stack.pop()
            try:
                with os.scandir(folder) as listing:
                    for entry in listing:
                        entries += 1
                        try:
                            total += entry.stat(follow_symlinks=False).st_blocks * 512
                            if entry.is_dir(follow_symlinks=False):
                                stack.append(entry.path)
                        except OSError:
                            continue  # vanished or unreadable: the next pass counts it
            except OSError:
                continue
        emit({"done": done, "homes": homes_seen, "current": current, "entries": entries})


if __name__ == "__main__":
    if sys.argv[1] == "probe":
        probe(*sys.argv[2:5])
    else:
        scan(sys.argv[2])
