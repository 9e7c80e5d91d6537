"""Durable file writes shared by the daemons."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO


def write_atomically(path: Path, data: bytes, mode: int = 0o666) -> None:
    """Write a temporary file, fsync it, rename it over ``path``, fsync the folder: after
    a crash the file holds either the old or the new content, never a mix. ``mode`` (less
    the umask) is the new file's from its creation on: a secret is never readable by others.
    A failed write (a full filesystem) removes the temporary file, and its space with it."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)  # a left-over one would keep its own mode
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        with os.fdopen(os.open(temporary, flags, mode), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` survive a crash."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class LockHeld(RuntimeError):
    """Another process holds a lock this one needs to run (the CLI exits with 75)."""


def try_lock(path: Path) -> IO[str] | None:
    """Take an exclusive ``flock`` on ``path`` without waiting; None if another process
    holds it. The lock lasts while the returned handle stays open (and dies with the
    process, so a crashed holder never blocks the others)."""
    handle = path.open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle
