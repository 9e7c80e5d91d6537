"""Real peers of the storage watcher's tests: a FUSE mount that can hang, nfs-ganesha in a
network namespace, a WebDAV server (wsgidav) and a server of Owncloud's ``status.php``."""

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from hubkeeper.deploy.stack import free_ports, to_toml, wait_for
from tests.integration.helpers import series

ROOT = Path(__file__).resolve().parents[2]


# --- the storage watcher --------------------------------------------------------------------

TIMEOUT = 1.0  # [storage] timeout in these tests
CHILD = "/storage/child.py"


class Watcher:
    """``hubkeeper watch-storage`` as a process of its own."""

    def __init__(self, base: Path, storage: dict, **sections: dict) -> None:
        (self.port,) = free_ports(1)
        storage = {"node": "node-a", "interval": 0.5, "timeout": TIMEOUT, "slow": 0.5,
                   "scan_budget": 0.3, "endpoint": {"port": self.port}, **storage}  # fmt: skip
        sections["culler"] = {"storage_watchers": [f"127.0.0.1:{self.port}"]}
        self.config_path = base / "hubkeeper.toml"
        self.config_path.write_text(to_toml({"storage": storage, **sections}))
        self.url = f"http://127.0.0.1:{self.port}"
        hubkeeper = Path(sys.executable).with_name("hubkeeper")
        self.log_path = base / "watcher.log"
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(hubkeeper), "watch-storage", "--config", str(self.config_path)],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait_for(self.healthy, 20, "the storage watcher")

    def healthy(self) -> bool:
        assert self.process.poll() is None, "the storage watcher exited"
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def get(self, path: str) -> requests.Response:
        """A request that must be answered within 2 s: the watcher never waits on a mount."""
        response = requests.get(f"{self.url}{path}", timeout=2)
        response.raise_for_status()
        return response

    def metric(self, name: str, **labels: str) -> list[float]:
        return series(self.get("/metrics").text, f"hubkeeper_storage_{name}", **labels)

    def status(self) -> dict:
        return self.get("/status").json()

    def children(self, kind: str) -> list[int]:
        """The watcher's child processes of ``kind`` (``probe`` or ``scan``)."""
        found = []
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
                argv = (entry / "cmdline").read_text().split("\0")
                if ppid == self.process.pid and argv[3].endswith(CHILD) and argv[4] == kind:
                    found.append(int(entry.name))
        return found

    def blocked_threads(self) -> list[str]:
        """Threads of the daemon itself that wait in the kernel on a filesystem."""
        blocked = []
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                state = (task / "stat").read_text().rpartition(")")[2].split()[0]
                wchan = (task / "wchan").read_text()
                if state == "D" or "fuse" in wchan or "request_wait_answer" in wchan:
                    blocked.append(f"{task.name}: {state} {wchan}")
        return blocked

    def close(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(20)
        self.log.close()


@contextlib.contextmanager
def watcher(base: Path, storage: dict, **sections: dict) -> Iterator[Watcher]:
    running = Watcher(base, storage, **sections)
    try:
        yield running
    finally:
        running.close()


# --- the FUSE filesystem --------------------------------------------------------------------


class StorageFS:
    """``tests/integration/storagefs.py`` mounted at ``mountpoint``; ``mode()`` steers it
    (``ok``, ``hang``, ``full``, ``no_inodes``, or several: ``full,no_inodes``)."""

    def __init__(self, base: Path) -> None:
        self.backing, self.mountpoint = base / "backing", base / "notebooks"
        self.control = base / "mode"
        for folder in (self.backing, self.mountpoint):
            folder.mkdir()
        self.mode("ok")
        command = [sys.executable, "-m", "tests.integration.storagefs", str(self.backing),
                   str(self.mountpoint), str(self.control)]  # fmt: skip
        self.process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE)
        wait_for(self.mounted, 15, "the FUSE test filesystem")

    def mounted(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"storagefs exited: {self.process.stderr.read().decode()}")
        return f" {self.mountpoint} fuse" in Path("/proc/mounts").read_text()

    def mode(self, mode: str) -> None:
        self.control.write_text(mode + "\n")

    def close(self) -> None:
        self.mode("ok")  # answer whatever waits, then unmount
        subprocess.run(["umount", "-l", str(self.mountpoint)], check=False)
        self.process.terminate()
        self.process.wait(10)


@contextlib.contextmanager
def storagefs(base: Path) -> Iterator[StorageFS]:
    fs = StorageFS(base)
    try:
        yield fs
    finally:
        fs.close()


# --- nfs-ganesha in a network namespace ------------------------------------------------------

# the storage tests' fixed private test subnet (no default route there); another module
# passes its own (two modules may run at the same time on one machine)
SUBNET = "10.254.20"
GANESHA_CONF = """
NFS_CORE_PARAM {{ Protocols = 3; NFS_Port = 2049; MNT_Port = 20048; Bind_addr = {address};
                 Enable_NLM = false; Enable_RQUOTA = false; }}
NFSV4 {{ Graceless = true; }}
EXPORT {{ Export_Id = 1; Path = {export}; Pseudo = /export; Access_Type = RW;
         Squash = No_Root_Squash; Protocols = 3; Transports = TCP; SecType = sys;
         FSAL {{ Name = VFS; }} }}
"""
# the namespace's own /run (rpcbind's socket) and /var/lib/nfs: nothing of the host's is used
HOLDER = "mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /var/lib/nfs && exec rpcbind -w -f"


class NfsServer:
    """rpcbind and nfs-ganesha (NFSv3, MOUNT v3) in a network namespace of their own,
    reached from the root namespace only over the test's veth pair (``subnet``: the
    first three octets of a /24)."""

    def __init__(self, base: Path, subnet: str = SUBNET) -> None:
        tag = secrets.token_hex(3)
        self.netns, self.veth = f"hkst-{tag}", f"hkst{tag}"
        self.subnet = subnet
        self.address = f"{subnet}.2"
        self.export = base / "export"
        self.export.mkdir()
        self.conf = base / "ganesha.conf"
        self.conf.write_text(GANESHA_CONF.format(address=self.address, export=self.export))
        self.log = base / "ganesha.log"
        self.ganesha: subprocess.Popen[bytes] | None = None
        self.holder: subprocess.Popen[bytes] | None = None

    def setup(self) -> None:
        for command in (
            f"ip netns add {self.netns}",
            f"ip link add {self.veth}a type veth peer name {self.veth}b",
            f"ip link set {self.veth}b netns {self.netns}",
            f"ip addr add {self.subnet}.1/24 dev {self.veth}a",
            f"ip link set {self.veth}a up",
            f"ip -n {self.netns} addr add {self.address}/24 dev {self.veth}b",
            f"ip -n {self.netns} link set {self.veth}b up",
            f"ip -n {self.netns} link set lo up",
        ):
            subprocess.run(command.split(), check=True)
        route = subprocess.run(["ip", "route", "get", self.address], capture_output=True,
                               text=True, check=True).stdout  # fmt: skip
        if f"dev {self.veth}a " not in route:
            raise RuntimeError(f"refusing to send: {self.address} is not routed over the test "
                               f"veth: {route.strip()}")  # fmt: skip
        enter = f"nsenter --net=/run/netns/{self.netns} unshare --mount --fork sh -c".split()
        self.holder = subprocess.Popen([*enter, HOLDER])
        wait_for(lambda: self._rpcbind() is not None, 10, "rpcbind in the test namespace")

    def _rpcbind(self) -> int | None:
        """rpcbind's pid: the holder's (unshare's) child, once it has exec'd rpcbind."""
        assert self.holder is not None
        children = Path(f"/proc/{self.holder.pid}/task/{self.holder.pid}/children")
        for pid in children.read_text().split():
            if Path(f"/proc/{pid}/comm").read_text().strip() == "rpcbind":
                return int(pid)
        return None

    def start(self) -> None:
        """ganesha.nfsd in rpcbind's namespaces (it registers there); wait until it serves."""
        from hubkeeper.watchers.storage import nfs

        command = f"nsenter -t {self._rpcbind()} -m -n ganesha.nfsd -F -f {self.conf} "
        self.ganesha = subprocess.Popen([*command.split(), "-L", str(self.log), "-p", "/run/g.pid"])
        wait_for(lambda: nfs.check(self.address, str(self.export), timeout=2).up, 30, "ganesha")

    def stop(self) -> None:
        if self.ganesha is not None:
            self.ganesha.send_signal(signal.SIGTERM)
            self.ganesha.wait(20)
            self.ganesha = None

    def close(self) -> None:
        self.stop()
        if self.holder is not None:
            rpcbind = self._rpcbind()
            if rpcbind is not None:
                os.kill(rpcbind, signal.SIGTERM)
            self.holder.wait(10)
        subprocess.run(["ip", "netns", "del", self.netns], check=False)
        subprocess.run(["ip", "link", "del", f"{self.veth}a"], check=False, capture_output=True)


@contextlib.contextmanager
def nfs_server(base: Path, subnet: str = SUBNET) -> Iterator[NfsServer]:
    server = NfsServer(base, subnet)
    try:
        server.setup()
        yield server
    finally:
        server.close()


# --- Owncloud's status.php and a real WebDAV server ------------------------------------------


class StatusPhp(ThreadingHTTPServer):
    """Serves ``/status.php`` as Owncloud documents it; ``document`` can be changed."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {
            "installed": True, "maintenance": False, "needsDbUpgrade": False,
            "version": "10.15.0.2", "versionstring": "10.15.0", "edition": "Community",
            "productname": "ownCloud", "product": "ownCloud",
        }  # fmt: skip
        super().__init__(("127.0.0.1", free_ports(1)[0]), _StatusHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _StatusHandler(BaseHTTPRequestHandler):
    server: StatusPhp

    def do_GET(self) -> None:
        if self.path != "/status.php":
            self.send_error(404)
            return
        body = json.dumps(self.server.document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def status_php() -> Iterator[StatusPhp]:
    server = StatusPhp()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


WSGIDAV_CONF = """
host: 127.0.0.1
port: {port}
server: ext-wsgiutils
provider_mapping:
  "/remote.php/dav/files/{user}": "{root}"
http_authenticator:
  domain_controller: null
  accept_basic: true
  accept_digest: false
  default_to_digest: false
simple_dc:
  user_mapping:
    "*":
      "{user}":
        password: "{password}"
"""


class WebDav:
    """wsgidav serving ``base/files`` as ``user``'s Owncloud files at ``url``; it can be
    stopped and started again on the same port."""

    def __init__(self, base: Path, user: str, password: str) -> None:
        root = base / "files"
        root.mkdir()
        (root / "canary.txt").write_text("canary\n")
        (port,) = free_ports(1)
        self.conf = base / "wsgidav.yaml"
        self.conf.write_text(
            WSGIDAV_CONF.format(port=port, user=user, root=root, password=password)
        )
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        wsgidav = Path(sys.executable).with_name("wsgidav")
        self.process = subprocess.Popen([str(wsgidav), "--config", str(self.conf)],
                                        stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)  # fmt: skip
        wait_for(lambda: _answers(self.url), 20, "wsgidav")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@contextlib.contextmanager
def webdav(base: Path, user: str, password: str) -> Iterator[WebDav]:
    """A running :class:`WebDav`, stopped at the end."""
    server = WebDav(base, user, password)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=1)
    except requests.RequestException:
        return False
    return True
