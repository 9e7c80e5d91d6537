"""A FUSE filesystem for the storage watcher's tests: a passthrough to a folder that can be
told to hang every operation, to be full, or to be out of inodes.

``python -m tests.integration.storagefs BACKING MOUNTPOINT CONTROL``: the modes are the
content of the file CONTROL (``ok``, ``hang``, ``full``, ``no_inodes``, or several joined
by commas: ``full,no_inodes``), read on every operation. A hung operation stays
unanswered in the kernel, as on a stalled NFS server. Stands in for an NFS client mount,
which this kernel does not have.
"""

import errno
import os
import sys
import time
from pathlib import Path

from fuse import FUSE, FuseOSError, Operations


class StorageFS(Operations):
    def __init__(self, backing: str, control: str) -> None:
        self.backing = backing
        self.control = Path(control)

    def modes(self) -> set[str]:
        try:
            return set(self.control.read_text().strip().split(","))
        except OSError:
            return {"ok"}

    def __call__(self, op: str, path: str, *args: object) -> object:
        while "hang" in self.modes():
            time.sleep(0.05)
        return super().__call__(op, path, *args)

    def real(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    def refuse_new(self) -> None:
        if self.modes() & {"full", "no_inodes"}:
            raise FuseOSError(errno.ENOSPC)

    # -- metadata ------------------------------------------------------------------------
    def getattr(self, path: str, fh: int | None = None) -> dict:
        st = os.lstat(self.real(path))
        keys = ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink", "st_size",
                "st_uid", "st_blocks")  # fmt: skip
        return {key: getattr(st, key) for key in keys}

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self.real(path))]

    def statfs(self, path: str) -> dict:
        v = os.statvfs(self.real(path))
        stats = {key: getattr(v, key) for key in ("f_bsize", "f_frsize", "f_blocks", "f_bfree",
                 "f_bavail", "f_files", "f_ffree", "f_favail", "f_namemax")}  # fmt: skip
        modes = self.modes()
        if "full" in modes:
            stats.update(f_bfree=0, f_bavail=0)
        if "no_inodes" in modes:
            stats.update(f_ffree=0, f_favail=0)
        return stats

    def access(self, path: str, amode: int) -> None:
        if not os.access(self.real(path), amode):
            raise FuseOSError(errno.EACCES)

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(self.real(path), mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(self.real(path), uid, gid)

    def utimens(self, path: str, times: tuple | None = None) -> None:
        os.utime(self.real(path), times)

    def mkdir(self, path: str, mode: int) -> None:
        self.refuse_new()
        os.mkdir(self.real(path), mode)

    def rmdir(self, path: str) -> None:
        os.rmdir(self.real(path))

    def unlink(self, path: str) -> None:
        os.unlink(self.real(path))

    def rename(self, old: str, new: str) -> None:
        os.rename(self.real(old), self.real(new))

    # -- data ----------------------------------------------------------------------------
    def create(self, path: str, mode: int, fi: object = None) -> int:
        self.refuse_new()
        return os.open(self.real(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

    def open(self, path: str, flags: int) -> int:
        return os.open(self.real(path), flags)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        if "full" in self.modes():
            raise FuseOSError(errno.ENOSPC)
        return os.pwrite(fh, data, offset)

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        os.truncate(self.real(path), length)

    def flush(self, path: str, fh: int) -> None:
        pass

    def fsync(self, path: str, datasync: int, fh: int) -> None:
        os.fsync(fh)

    def release(self, path: str, fh: int) -> None:
        os.close(fh)


if __name__ == "__main__":
    backing, mountpoint, control = sys.argv[1:4]
    FUSE(StorageFS(backing, control), mountpoint, foreground=True, allow_other=True,
         default_permissions=True)  # fmt: skip
