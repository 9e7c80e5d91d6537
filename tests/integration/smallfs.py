"""A real, size-limited tmpfs that a test fills up and frees again: a full filesystem
(ENOSPC) for the shipper's spool, the chaos soak's "spool filesystem full" fault.
Mounting needs root (:func:`can_mount`). Mount before the program using the folder
starts: a mount hides what the folder held, and a program keeps files it has open on the
filesystem below.

    with small_tmpfs(folder, "2m") as fs:
        fs.fill()   # every free byte taken by a filler file
        fs.free()   # the filler gone
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FILLER = ".filler"
CHUNKS = (1 << 20, 64 << 10, 4 << 10, 512, 1)  # the last ones fill partly used pages


def can_mount() -> bool:
    return os.geteuid() == 0


class SmallFS:
    """A mounted tmpfs: how much is free, and a filler file that takes all of it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / FILLER

    def free_bytes(self) -> int:
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize

    def fill(self) -> int:
        """Write the filler until the filesystem refuses even one byte; its size."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in CHUNKS:
                data = b"\0" * chunk
                while True:
                    try:
                        os.write(fd, data)
                    except OSError as error:
                        if error.errno != errno.ENOSPC:
                            raise
                        break
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def free(self) -> None:
        """Remove the filler: its space is free again at once."""
        self.filler.unlink(missing_ok=True)


@contextmanager
def small_tmpfs(path: Path, size: str = "2m") -> Iterator[SmallFS]:
    """Mount a tmpfs of ``size`` (``mount -o size=``: ``2m``, ``512k``) at ``path``
    (created if missing) and unmount it afterwards, lazily if something still holds it."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True
    )
    try:
        yield SmallFS(path)
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)
