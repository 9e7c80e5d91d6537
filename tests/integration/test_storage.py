"""The storage watcher against real peers: a FUSE mount that hangs, fills up and runs out
of inodes (in a real user container's bind mount); nfs-ganesha in a network namespace,
stopped and started; a real WebDAV server (wsgidav) and Owncloud's documented status.php.

This kernel has no NFS client, so the mount side is a FUSE filesystem whose operations
can be made to wait unanswered in the kernel, as on a stalled NFS server; the network side
is a real NFS server. No Owncloud is packaged here: its status.php is served as Owncloud
documents it, and the WebDAV PROPFIND goes to wsgidav.
"""

import contextlib
import dataclasses
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubkeeper.config import DockerConfig, LabelsConfig
from hubkeeper.deploy.stack import docker_client, free_ports, http_ok, wait_for
from hubkeeper.hub.images import ensure_base
from hubkeeper.loader import load
from hubkeeper.redact import Secret
from hubkeeper.watchers.culler.decide import plan
from hubkeeper.watchers.culler.model import ServerView, UserView
from hubkeeper.watchers.culler.storage import read_hold
from hubkeeper.watchers.storage import nfs
from hubkeeper.watchers.storage.owncloud import Owncloud
from tests.integration.alerting import prometheus_alerts
from tests.integration.storage_peers import (
    TIMEOUT,
    StorageFS,
    Watcher,
    nfs_server,
    status_php,
    storagefs,
    watcher,
    webdav,
)

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def user_container(mountpoint: Path, user: str) -> Iterator[str]:
    """A real container of ``user``'s server, labelled as the hub labels them, with the
    user's home on the test mount (as DockerSpawner mounts notebook homes)."""
    client = docker_client(DockerConfig().url)
    assert client is not None, "no Docker engine answers"
    image = ensure_base(client, print)
    home = mountpoint / user
    home.mkdir()
    (home / "notebook.ipynb").write_bytes(os.urandom(200_000))
    labels = LabelsConfig()
    container = client.containers.run(
        image, ["sleep", "600"], name=f"jupyter-{user}", detach=True, network_mode="none",
        labels={labels.user: user, labels.server: "", labels.hub: "storage-test"},
        volumes={str(home): {"bind": "/home/jovyan", "mode": "rw"}},
    )  # fmt: skip
    try:
        yield container.name
    finally:
        container.remove(force=True)


@contextlib.contextmanager
def prometheus(w: Watcher) -> Iterator[str]:
    """A real Prometheus with the rendered scrape config and rules, scraping the watcher."""
    out = w.config_path.parent / "alerting"
    subprocess.run(
        [str(Path(sys.executable).with_name("hubkeeper")), "alerts", "render", "--config",
         str(w.config_path), "--out", str(out)], check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    url = load(w.config_path).alerts.prometheus_url
    with (out / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            ["prometheus", f"--config.file={out / 'prometheus.yml'}",
             f"--storage.tsdb.path={out / 'tsdb'}",
             f"--web.listen-address={url.removeprefix('http://')}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(lambda: http_ok(f"{url}/-/ready"), 30, "Prometheus")
        yield url
    finally:
        process.terminate()
        process.wait(20)


def alerting(port: int) -> dict:
    """``[alerts]``: a Prometheus on ``port`` that scrapes the storage watcher every second."""
    return {"prometheus_url": f"http://127.0.0.1:{port}", "scrape_interval": 1.0,
            "scrape_timeout": 1.0, "evaluation_interval": 1.0, "daemons": ["storage"]}  # fmt: skip


# --- the mount side ------------------------------------------------------------------------

NOW = time.time()


def idle_user(name: str) -> UserView:
    """A user whose default server has been idle for a day: the culler would stop it."""
    server = ServerView(name, "", True, None, NOW - 90_000, NOW - 86_400, "image", 0.0)
    return UserView(name, False, (), NOW - 100_000, NOW - 86_400, (server,))


def test_a_hung_mount_is_reported_hung_with_its_servers_and_the_culler_holds_them(
    tmp_path: Path,
) -> None:
    user = f"hkst{secrets.token_hex(3)}"
    mounts = {"mounts": [{"name": "notebooks", "path": str(tmp_path / "notebooks")}]}
    with (
        storagefs(tmp_path) as fs,
        user_container(fs.mountpoint, user) as container,
        watcher(tmp_path, mounts, alerts=alerting(free_ports(1)[0])) as w,
        prometheus(w) as url,
    ):
        wait_for(lambda: w.metric("mount_state", mount="notebooks", state="ok") == [1.0], 10,
                 "the mount probed ok")  # fmt: skip
        wait_for(lambda: w.metric("user_usage_bytes", user=user) != [], 10, "the usage scan")
        assert w.metric("user_usage_bytes", user=user)[0] >= 200_000
        assert w.metric("servers_on_hung_storage") == [0.0]
        config = load(w.config_path)
        assert read_hold(config).nodes == ()

        fs.mode("hang")
        wait_for(lambda: w.metric("mount_hung", mount="notebooks") == [1.0], 2 + 3 * TIMEOUT,
                 "the mount reported hung")  # fmt: skip
        # the watcher answers, and names the user's server and its node
        status = w.status()
        assert status["node"] == "node-a" and status["hung"] == ["notebooks"]
        assert {"user": user, "server": "", "container": container, "mount": "notebooks"} in (
            status["servers_on_hung_storage"]
        )
        assert status["mounts"]["notebooks"]["operations"]["stat"]["outcome"] == "hung"
        assert w.metric("server_on_hung_storage", user=user, node="node-a") == [1.0]
        assert w.get("/healthz").text.startswith("ok; hung: notebooks")
        sensor = w.get("/prtg/storage").json()["prtg"]
        channels = {c["channel"]: c["value"] for c in sensor["result"]}
        assert channels["notebooks hung"] == 1 and user in sensor["text"]
        # the culler, reading the real watcher, reports the server instead of stopping it
        hold = read_hold(config)
        assert hold.holds(user, "") and hold.nodes == ("node-a",)
        plans, _ = plan([idle_user(user)], [], config.culler, NOW, [hold])
        decision = plans[0].servers[0]
        assert (decision.action, decision.reason) == ("report", "storage_hung")
        # until the alert fires (30 s): no thread of the daemon waits on the mount, and no
        # second probe starts while one is blocked (at most the probe and the usage scanner)
        blocked = w.children("probe")
        assert len(blocked) == 1
        deadline = time.monotonic() + 60
        while not prometheus_alerts(url, "HubkeeperStorageHung"):
            assert time.monotonic() < deadline, "HubkeeperStorageHung did not fire"
            assert w.blocked_threads() == []
            assert w.children("probe") == blocked and len(w.children("scan")) <= 1
            time.sleep(1.0)
        (alert,) = prometheus_alerts(url, "HubkeeperStorageHung")
        assert alert["labels"]["node"] == "node-a" and alert["labels"]["mount"] == "notebooks"
        assert f"Servers on it: {user} ." in alert["annotations"]["description"]

        fs.mode("ok")
        wait_for(lambda: w.metric("mount_hung", mount="notebooks") == [0.0], 10,
                 "the mount answering again")  # fmt: skip
        assert w.status()["servers_on_hung_storage"] == []
        hold = read_hold(config)
        assert not hold.holds(user, "")
        plans, _ = plan([idle_user(user)], [], config.culler, NOW, [hold])
        assert plans[0].servers[0].action == "stop"  # culling resumes
        assert not Path(f"/proc/{blocked[0]}").exists()  # the hung probe was reaped
        wait_for(lambda: not prometheus_alerts(url, "HubkeeperStorageHung"), 20, "resolved")
        # the canary was removed (every probe writes one under the same name and removes it
        # a few milliseconds later: one in flight may be seen, a left-over one stays)
        canaries = fs.backing / ".hubkeeper"
        wait_for(lambda: list(canaries.iterdir()) == [], 5, "no canary left", interval=0.05)


def test_a_full_mount_and_one_out_of_inodes_show_in_the_capacity_and_the_probe(
    tmp_path: Path,
) -> None:
    mounts = {"mounts": [{"name": "notebooks", "path": str(tmp_path / "notebooks")}]}
    with storagefs(tmp_path) as fs:
        with watcher(tmp_path, mounts) as w:
            full_and_no_inodes(fs, w)
            fs.mode("hang")
            wait_for(lambda: w.metric("mount_hung") == [1.0], 2 + 3 * TIMEOUT, "hung")
        # SIGTERM while a probe is blocked: the watcher stops at once and cleanly
        assert w.process.returncode == 0


def full_and_no_inodes(fs: StorageFS, w: Watcher) -> None:
    wait_for(lambda: w.metric("mount_state", state="ok") == [1.0], 10, "the mount probed ok")
    assert w.metric("free_bytes")[0] > 0 and w.metric("free_inodes")[0] > 0

    fs.mode("full")
    wait_for(lambda: w.metric("free_bytes") == [0.0], 10, "no free bytes reported")
    wait_for(lambda: w.metric("mount_state", state="failed") == [1.0], 10, "a failed write")
    write = w.status()["mounts"]["notebooks"]["operations"]["write"]
    assert write["outcome"] == "failed" and write["error"].startswith("ENOSPC")

    fs.mode("no_inodes")
    wait_for(lambda: w.metric("free_inodes") == [0.0], 10, "no free inodes reported")
    assert w.metric("free_bytes")[0] > 0
    sensor = w.get("/prtg/storage").json()["prtg"]
    channels = {c["channel"]: c["value"] for c in sensor["result"]}
    assert channels["notebooks free inodes"] == 0 and channels["notebooks free space"] > 0


# --- the network side: the NFS server, Owncloud ----------------------------------------------


def test_the_rpc_check_tells_the_nfs_server_down_from_up(tmp_path: Path) -> None:
    with nfs_server(tmp_path) as server:
        server.start()
        check = nfs.check(server.address, str(server.export), timeout=5)
        assert check.up and check.root_fileid == server.export.stat().st_ino  # GETATTR's fileid
        refused = nfs.check(server.address, "/not-exported", timeout=5)
        assert refused.state == "error" and "MNT3ERR" in (refused.calls["mount"].error or "")

        nfs_table = [{"name": "filer", "host": server.address, "export": str(server.export),
                      "timeout": 2.0}]  # fmt: skip
        with watcher(tmp_path, {"nfs": nfs_table}) as w:
            wait_for(lambda: w.metric("nfs_up", server="filer") == [1.0], 10, "NFS up")
            assert w.metric("nfs_call_ok", server="filer", call="getattr") == [1.0]

            server.stop()
            wait_for(lambda: w.metric("nfs_up", server="filer") == [0.0], 10, "NFS down")
            assert w.status()["nfs"]["filer"]["state"] == "down"
            sensor = w.get("/prtg/storage").json()["prtg"]
            assert {c["channel"]: c["value"] for c in sensor["result"]}["NFS filer up"] == 0

            server.start()
            wait_for(lambda: w.metric("nfs_up", server="filer") == [1.0], 10, "NFS up again")


def test_owncloud_status_and_a_webdav_propfind_of_the_canary(tmp_path: Path) -> None:
    password = secrets.token_urlsafe(12)
    (tmp_path / "app-password").write_text(password + "\n")
    with status_php() as status, webdav(tmp_path, "alice", password) as dav:
        owncloud = {
            "url": status.url,
            "user": "alice",
            "app_password_file": str(tmp_path / "app-password"),
            "canary_path": "canary.txt",
            "webdav_url": f"{dav.url}/remote.php/dav/files/alice",
        }
        with watcher(tmp_path, {"owncloud": owncloud}) as w:
            wait_for(lambda: w.metric("owncloud_up") == [1.0], 10, "Owncloud up")
            assert w.metric("owncloud_check_ok", check="webdav") == [1.0]
            assert w.metric("owncloud_info", version="10.15.0.2", productname="ownCloud") == [1.0]

            status.document["maintenance"] = True
            wait_for(lambda: w.metric("owncloud_state", state="maintenance") == [1.0], 10,
                     "Owncloud in maintenance")  # fmt: skip
            assert w.metric("owncloud_up") == [0.0]
            assert password not in w.log_path.read_text()

        config = load(w.config_path).storage.owncloud
        wrong = dataclasses.replace(config, app_password=Secret("not-the-password"))
        assert Owncloud(wrong).check().checks["webdav"].error == "PROPFIND answered HTTP 401"
        missing = dataclasses.replace(config, canary_path="no-such-file")
        assert Owncloud(missing).check().checks["webdav"].error == "PROPFIND answered HTTP 404"
