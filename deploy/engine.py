"""A Docker engine of the test's own, beside the machine's: restartable, with live-restore.

The machine's engine (the default socket) is shared and never stopped by a test. A fault
"the Docker engine restarted" therefore needs an engine of its own: a second ``dockerd`` in
the root network namespace (containers keep host networking, so a user server is reached
on 127.0.0.1 as with the machine's engine) with its own data root, exec root, pidfile and
socket, and ``--live-restore``, as production runs it (README, "The Docker engine"). It has
no registry: the stack's images are copied from the machine's engine (``docker save`` /
``docker load``, :func:`copy_images`, which the Swarm's nodes use too).

:meth:`OwnEngine.restart` stops ``dockerd`` by its PID (SIGTERM, wait) and starts it again
with the same flags; its containerd-shims, and with them the containers, live on. Teardown
removes its containers, stops it (and the containerd it started) by PID, unmounts what is
left under its roots and removes its folders.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

from hubkeeper.config import DockerConfig
from hubkeeper.deploy.netns import run
from hubkeeper.deploy.scoped import Scoped
from hubkeeper.deploy.stack import DOCKERD_FLAGS, docker_client, stop_pid, wait_for

#: A Unix socket's path has at most 107 bytes: sockets and state go under /run.
RUN_ROOT = Path("/run")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def dockerd_flags(data_root: Path, run_dir: Path, url: str) -> list[str]:
    """An engine's own data, state, pidfile and socket; no networking of its own."""
    return [
        f"--data-root={data_root}",
        f"--exec-root={run_dir / 'exec'}",
        f"--pidfile={run_dir / 'docker.pid'}",
        f"-H={url}",
        *DOCKERD_FLAGS,
        "--storage-driver=overlay2",
    ]


def copy_images(
    tags: Iterable[str], urls: Iterable[str], workdir: Path, progress: Callable[[str], None]
) -> None:
    """Copy images of this machine's engine to the engines at ``urls`` (there is no
    registry): one archive, shared layers once; nothing when every engine has them already."""
    tags, urls = list(tags), list(urls)
    source = docker.DockerClient(base_url=DockerConfig().url, timeout=60)
    wanted = {tag: source.images.get(tag).id for tag in tags}
    missing = [url for url in urls if not _has(url, wanted)]
    if not missing:
        return
    progress(f"loading {', '.join(tags)} into {len(missing)} engine(s)")
    archive = workdir / "images.tar"
    run("docker", "save", "-o", str(archive), *tags, timeout=600)
    try:
        for url in missing:
            run("docker", "-H", url, "load", "-q", "-i", str(archive), timeout=600)
    finally:
        archive.unlink()


def _has(url: str, images: dict[str, str]) -> bool:
    """Whether the engine at ``url`` has each tag as this image id."""
    client = docker.DockerClient(base_url=url, timeout=30)
    try:
        return all(client.images.get(tag).id == image for tag, image in images.items())
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()


def remove_engine_files(*roots: Path) -> None:
    """Unmount (lazily) what an engine left mounted under ``roots``, then remove them."""
    prefixes = tuple(str(root) for root in roots)
    mounts = [
        line.split()[1]
        for line in Path("/proc/mounts").read_text().splitlines()
        if line.split()[1].startswith(prefixes)
    ]
    for mount in sorted(mounts, reverse=True):
        run("umount", "-l", mount, check=False)
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


def end_process(popen: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM a process this one started, wait up to ``timeout``, then SIGKILL it."""
    if popen.poll() is None:
        popen.terminate()
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(10)


@dataclass
class OwnEngine(Scoped):
    """A ``dockerd`` with live-restore under ``workdir``, with ``images`` loaded; a context.

    ``url`` is its socket (``[docker] url`` of a stack that should run on it);
    ``timings`` holds the seconds each start and restart took until the engine answered.
    """

    workdir: Path
    images: tuple[str, ...] = ()
    progress: Callable[[str], None] = print
    live_restore: bool = True
    timings: dict[str, list[float]] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.workdir = self.workdir.resolve()
        self.data_root = self.workdir / "engine-data"
        self.run_dir = Path(tempfile.mkdtemp(prefix="hk-engine-", dir=RUN_ROOT))
        self.log_path = self.workdir / "dockerd.log"

    @property
    def url(self) -> str:
        return f"unix://{self.run_dir / 'docker.sock'}"

    @property
    def argv(self) -> list[str]:
        live = ["--live-restore"] if self.live_restore else []
        return ["dockerd", *dockerd_flags(self.data_root, self.run_dir, self.url), *live]

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def client(self, timeout: float = 30) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=timeout)

    def up(self) -> None:
        """Start it and copy the images in."""
        started = time.monotonic()
        self.start()
        if self.images:
            copy_images(self.images, [self.url], self.workdir, self.progress)
        self._timed("start_with_images", started)

    def start(self) -> None:
        """Start ``dockerd`` and wait until it answers."""
        if shutil.which("dockerd") is None:
            raise RuntimeError("no Docker engine: install docker.io (deploy/setup.sh does)")
        self.data_root.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        popen = self.popen
        wait_for(
            lambda: popen.poll() is not None or docker_client(self.url) is not None,
            START_TIMEOUT,
            f"the engine at {self.url}",
        )
        if popen.poll() is not None:
            raise RuntimeError(f"dockerd exited ({popen.returncode}); see {self.log_path}")
        self._timed("start", started)

    def stop(self) -> None:
        """Stop ``dockerd`` by its PID (SIGTERM, wait); live-restore leaves the containers."""
        if self.popen is not None:
            started = time.monotonic()
            end_process(self.popen)
            self._timed("stop", started)
        self.popen = None

    def restart(
        self, down_for: float = 0.0, while_down: Callable[[], object] | None = None
    ) -> float:
        """Stop the engine, call ``while_down`` (another fault at that moment), wait until
        it has been down ``down_for`` seconds, start it again with the same flags; the
        seconds from the stop until it answered again."""
        started = time.monotonic()
        self.progress(f"engine: restarting (down for {down_for:.0f} s at least)")
        self.stop()
        if while_down is not None:
            while_down()
        time.sleep(max(0.0, started + down_for - time.monotonic()))
        self.start()
        return self._timed("restart", started)

    def _timed(self, what: str, started: float) -> float:
        seconds = round(time.monotonic() - started, 2)
        self.timings.setdefault(what, []).append(seconds)
        return seconds

    def down(self) -> None:
        """Remove its containers, stop it and its containerd by PID, remove its files.
        Stopped (a test failed while it was down), it is started again first: its
        containers outlive it, and only it can remove them."""
        if (self.popen is None or self.popen.poll() is not None) and self.data_root.exists():
            with contextlib.suppress(RuntimeError, TimeoutError, OSError):
                self.start()
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(docker.errors.DockerException, OSError):
                client = self.client(10)
                for container in client.containers.list(all=True):
                    with contextlib.suppress(docker.errors.DockerException):
                        container.remove(force=True)
        self.stop()
        pid = self._containerd_pid()
        if pid is not None:
            stop_pid(pid, 10)
        remove_engine_files(self.run_dir, self.data_root)

    def _containerd_pid(self) -> int | None:
        """The containerd this engine started, if it still runs (checked by its command
        line: a stale pidfile's number may belong to another process by now)."""
        state = self.run_dir / "exec" / "containerd"
        try:
            pid = int((state / "containerd.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            return None
        return pid if "containerd" in cmdline and str(state) in cmdline else None
