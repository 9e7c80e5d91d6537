"""A real Elasticsearch for the tests and the local stack: from Maven Central, run unprivileged.

The server is Elastic's ``integ-test-zip`` distribution, fetched once with ``mvn`` into the
local Maven repository and unpacked into a cache folder outside the repository
(``$HUBKEEPER_CACHE_DIR``, else ``/var/cache/hubkeeper`` as root, ``~/.cache/hubkeeper``
otherwise: the unprivileged server user must be able to read it). Elasticsearch refuses to
run as root, so as root each instance runs as the system user ``hubkeeper-es`` (created on
first use) through ``runuser``; its config, data and logs live in a folder of its own that
the user owns. Instances listen on free 127.0.0.1 ports and are stopped by PID.

``python -m hubkeeper.deploy.elasticsearch install`` fetches and unpacks the 9.x of the local
stack and the 8.x the tests also run against (``deploy/setup.sh`` runs it).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from hubkeeper.deploy.stack import free_ports, wait_for

#: The newest 9.x ``integ-test-zip`` that resolves from Maven Central here (9.3.0 and 9.5.6
#: did not): the local stack's and the tests' server.
ES_VERSION = "9.2.0"
#: The newest 8.x that resolves (the ``release`` of the artifact's maven-metadata.xml; 8.19.22
#: did not): the tests check that everything also works against an 8.x cluster.
ES8_VERSION = "8.19.21"
VERSIONS = {"9": ES_VERSION, "8": ES8_VERSION}  # the local stack's by major
ARTIFACT = "org.elasticsearch.distribution.integ-test-zip:elasticsearch"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
ES_USER = "hubkeeper-es"
#: The Java releases (lowest, highest) each Elasticsearch major runs on without a bundled
#: JDK: 8.x on 17 to 21, which every 8.x supports (Debian's OpenJDK 17 here; 8.19.21 also
#: started on Temurin 25, which is not relied on), 9.x on 21 or newer (Temurin 25 here).
JAVA_RANGE: dict[int, tuple[int, int]] = {8: (17, 21), 9: (21, 999)}
JVM_DIR = Path("/usr/lib/jvm")


def cache_dir() -> Path:
    if "HUBKEEPER_CACHE_DIR" in os.environ:
        return Path(os.environ["HUBKEEPER_CACHE_DIR"])
    if os.geteuid() == 0:
        return Path("/var/cache/hubkeeper")
    return Path("~/.cache/hubkeeper").expanduser()


def maven_zip(version: str) -> Path:
    group, artifact = ARTIFACT.split(":")
    folder = Path("~/.m2/repository").expanduser() / group.replace(".", "/") / artifact / version
    return folder / f"{artifact}-{version}.zip"


def install(version: str = ES_VERSION, progress: Callable[[str], None] = print) -> Path:
    """The unpacked distribution (its home folder), fetched and unpacked when missing."""
    home = cache_dir() / f"elasticsearch-{version}"
    if (home / "bin" / "elasticsearch").is_file():
        return home
    archive = maven_zip(version)
    if not archive.is_file():
        progress(f"fetching Elasticsearch {version} from Maven Central")
        subprocess.run(
            ["mvn", "-B", "-q", f"{DEPENDENCY_PLUGIN}:get", "-Dtransitive=false",
             f"-Dartifact={ARTIFACT}:{version}:zip"],
            check=True,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    progress(f"unpacking Elasticsearch {version} into {home.parent}")
    home.parent.mkdir(parents=True, exist_ok=True)
    home.parent.chmod(0o755)
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=home.parent))
    try:
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.infolist():
                target = Path(zipped.extract(member, staging))
                mode = (member.external_attr >> 16) & 0o777  # zipfile drops the exec bits
                target.chmod((mode or (0o755 if member.is_dir() else 0o644)) | 0o444)
        (top,) = staging.iterdir()
        top.chmod(0o755)
        try:
            top.rename(home)  # atomic: a half-unpacked copy is never taken for a complete one
        except OSError:
            if not (home / "bin" / "elasticsearch").is_file():
                raise  # not another process having unpacked it meanwhile
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return home


def java_home(version: str = ES_VERSION) -> Path:
    """``$ES_JAVA_HOME``, else the newest JDK under /usr/lib/jvm that Elasticsearch
    ``version`` runs on (:data:`JAVA_RANGE`)."""
    if os.environ.get("ES_JAVA_HOME"):
        return Path(os.environ["ES_JAVA_HOME"])
    lowest, highest = JAVA_RANGE[int(version.split(".")[0])]
    found: list[tuple[int, Path]] = []
    for release in JVM_DIR.glob("*/release"):
        match = re.search(r'^JAVA_VERSION="(\d+)', release.read_text(errors="replace"), re.M)
        java = int(match.group(1)) if match else 0
        if lowest <= java <= highest and (release.parent / "bin/java").exists():
            found.append((java, release.parent))
    if not found:
        raise RuntimeError(
            f"Elasticsearch {version} needs Java {lowest} to {highest} under {JVM_DIR}"
        )
    return max(found)[1]


def ensure_user(name: str = ES_USER) -> str | None:
    """As root, the unprivileged system user the server runs as (created if missing)."""
    if os.geteuid() != 0:
        return None  # already unprivileged: run as ourselves
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
            check=True,
        )  # fmt: skip
    return name


#: How often the node checks its disk usage against the watermarks: Elasticsearch's least
#: (its default, 30 s, set again at run time, only takes effect after the next check), so
#: that :func:`flood_stage` takes effect within seconds.
DISK_CHECK_INTERVAL = "10s"


@dataclass(frozen=True)
class Security:
    """Security on: HTTPS with ``cert`` and ``key`` (PEM, for 127.0.0.1, signed by ``ca``) and
    a superuser ``user`` of the file realm. The integ-test zip has no API keys (their
    index needs the missing analysis-common module)."""

    cert: Path
    key: Path
    ca: Path
    user: str = "hubkeeper"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12), repr=False)


@dataclass
class Elasticsearch:
    """One single-node instance with its own folder (config, data, logs) and ports."""

    version: str
    home: Path
    root: Path
    port: int
    transport_port: int
    user: str | None = None
    heap: str = "512m"
    security: Security | None = None
    pid: int | None = field(default=None, init=False)

    @classmethod
    def create(
        cls,
        version: str = ES_VERSION,
        heap: str = "512m",
        progress: Callable[[str], None] = print,
        security: Security | None = None,
    ) -> Elasticsearch:
        """A new instance of ``version`` (fetched when missing) on free ports, in a new
        folder the server user owns."""
        home = install(version, progress)
        user = ensure_user()
        root = Path(tempfile.mkdtemp(prefix="hubkeeper-es-"))
        shutil.copytree(home / "config", root / "config")
        if security is not None:
            shutil.copy(security.cert, root / "config" / "http.pem")
            shutil.copy(security.key, root / "config" / "http.key")
        for name in ("data", "logs"):
            (root / name).mkdir()
        if user is not None:
            entry = pwd.getpwnam(user)
            for path in [root, *root.rglob("*")]:
                os.chown(path, entry.pw_uid, entry.pw_gid)
        port, transport = free_ports(2)
        instance = cls(version, home, root, port, transport, user, heap, security)
        if security is not None:
            instance.run_tool(
                "elasticsearch-users", "useradd", security.user, "-p", security.password,
                "-r", "superuser",
            )  # fmt: skip
        return instance

    @property
    def url(self) -> str:
        return f"{'https' if self.security else 'http'}://127.0.0.1:{self.port}"

    def client_options(self) -> dict[str, Any]:
        """``requests`` options for this instance: its CA and credentials when secured."""
        if self.security is None:
            return {}
        return {
            "verify": str(self.security.ca),
            "auth": (self.security.user, self.security.password),
        }

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "ES_JAVA_HOME": str(java_home(self.version)),
            "ES_PATH_CONF": str(self.root / "config"),
        }

    def run_tool(self, name: str, *argv: str) -> None:
        """One of the distribution's command-line tools (``bin/NAME``), as the server user."""
        command = [str(self.home / "bin" / name), *argv]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        subprocess.run(
            command, env=self.environment(), cwd=self.root, check=True, capture_output=True,
            timeout=120,
        )  # fmt: skip

    def running(self) -> bool:
        if self.pid is None:
            return False
        try:  # a zombie (exited, not yet reaped) counts as stopped
            return Path(f"/proc/{self.pid}/stat").read_text().split(") ")[-1][0] != "Z"
        except OSError:
            return False

    def health(self) -> str | None:
        """``green``, ``yellow``, ``red``, or None while it does not answer."""
        try:
            response = requests.get(
                f"{self.url}/_cluster/health", timeout=2, **self.client_options()
            )
            return str(response.json()["status"]) if response.ok else None
        except (requests.RequestException, ValueError, KeyError):
            return None

    def start(self, timeout: float = 120.0) -> None:
        """Start in the background (``-d``) and wait until the cluster is yellow or green."""
        pid_file = self.root / "elasticsearch.pid"
        pid_file.unlink(missing_ok=True)
        command = [
            str(self.home / "bin" / "elasticsearch"), "-d", "-p", str(pid_file),
            "-E", "discovery.type=single-node",
            "-E", f"xpack.security.enabled={'true' if self.security else 'false'}",
            "-E", "network.host=127.0.0.1", "-E", f"http.port={self.port}",
            "-E", f"transport.port={self.transport_port}",
            "-E", f"path.data={self.root / 'data'}", "-E", f"path.logs={self.root / 'logs'}",
            "-E", f"cluster.info.update.interval={DISK_CHECK_INTERVAL}",
        ]  # fmt: skip
        if self.security is not None:
            command += [
                "-E", "xpack.security.http.ssl.enabled=true",
                "-E", "xpack.security.http.ssl.certificate=http.pem",
                "-E", "xpack.security.http.ssl.key=http.key",
            ]  # fmt: skip
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        env = {
            **self.environment(),
            "ES_JAVA_OPTS": f"-Xms{self.heap} -Xmx{self.heap} -XX:-UsePerfData",
        }
        with (self.root / "launcher.log").open("ab") as output:
            launcher = subprocess.run(
                command, env=env, stdout=output, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.root, timeout=timeout, check=False,
            )  # fmt: skip
        if pid_file.is_file():
            self.pid = int(pid_file.read_text().strip())
        if launcher.returncode != 0 or self.pid is None:
            raise RuntimeError(f"Elasticsearch did not start; see {self.root}/launcher.log")
        wait_for(lambda: self.health() in ("green", "yellow"), timeout, "Elasticsearch")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the server by PID, SIGKILL it if it is still there after ``timeout``."""
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.running():
                time.sleep(0.1)
            os.kill(self.pid, signal.SIGKILL)
        self.pid = None

    def remove(self) -> None:
        """Stop and delete the instance's folder."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_elasticsearch(
    progress: Callable[[str], None] = print,
    version: str = ES_VERSION,
    security: Security | None = None,
) -> Iterator[Elasticsearch]:
    instance = Elasticsearch.create(version, progress=progress, security=security)
    try:
        progress(f"starting Elasticsearch on {instance.url}")
        instance.start()
        yield instance
    finally:
        instance.remove()


# --- the flood-stage disk watermark, as a fault -----------------------------------------

#: Cluster settings that put every node past its flood-stage disk watermark: free-space
#: watermarks (absolute values are free space) larger than any disk, with the disk checked
#: as often as Elasticsearch allows (``cluster.info.update.interval``, at least 10 s).
FLOOD_STAGE_SETTINGS: dict[str, object] = {
    "cluster.routing.allocation.disk.threshold_enabled": True,
    "cluster.routing.allocation.disk.watermark.low": "999tb",
    "cluster.routing.allocation.disk.watermark.high": "998tb",
    "cluster.routing.allocation.disk.watermark.flood_stage": "997tb",
    "cluster.info.update.interval": DISK_CHECK_INTERVAL,
}
FLOOD_STAGE_BLOCK = "12"  # index.blocks.read_only_allow_delete, in GET _cluster/state/blocks
FLOOD_PROBE_INDEX = "hubkeeper-flood-stage-probe"  # an index to see the block put on


def _answer(method: str, url: str, **options: Any) -> requests.Response | None:
    """The answer to a request; None while Elasticsearch does not answer (stopped,
    starting: 5xx). Any other error is raised."""
    try:
        response = requests.request(method, url, timeout=30, **options)
    except (requests.ConnectionError, requests.Timeout):
        return None
    if response.status_code >= 500:
        return None
    response.raise_for_status()
    return response


def blocked_indices(url: str, block: str = FLOOD_STAGE_BLOCK) -> set[str] | None:
    """The indices that carry ``block`` (by id) now; None while Elasticsearch does not
    answer."""
    response = _answer("GET", f"{url}/_cluster/state/blocks")
    if response is None:
        return None
    indices = response.json().get("blocks", {}).get("indices", {})
    return {name for name, blocks in indices.items() if block in blocks}


@contextlib.contextmanager
def flood_stage(url: str, timeout: float = 120.0) -> Iterator[None]:
    """The node at ``url`` past its flood-stage disk watermark, the real way (the disk
    watermarks): on entry, once Elasticsearch has put its read-only-allow-delete block on
    an index (a probe index made for that); on exit, the cluster settings as they were and
    the block lifted from every index, which Elasticsearch does by itself once the node is
    below the high watermark again. Writes to existing indices are answered 429
    ``cluster_block_exception``; a new index is created but its shard stays unassigned
    (cluster red, writes 503 after the bulk ``timeout``) until the block is lifted. The
    settings are persistent: Elasticsearch stopped meanwhile is waited for."""
    settings = f"{url}/_cluster/settings"
    current = _answer("GET", f"{settings}?flat_settings=true")
    if current is None:
        raise RuntimeError(f"Elasticsearch at {url} does not answer")
    before = {key: current.json()["persistent"].get(key) for key in FLOOD_STAGE_SETTINGS}
    probe = requests.put(
        f"{url}/{FLOOD_PROBE_INDEX}", json={"settings": {"number_of_replicas": 0}}, timeout=30
    )
    if probe.status_code != 400 or "already_exists" not in probe.text:
        probe.raise_for_status()
    try:
        flood = {"persistent": FLOOD_STAGE_SETTINGS}
        wait_for(lambda: _answer("PUT", settings, json=flood) is not None, timeout, url)
        wait_for(
            lambda: FLOOD_PROBE_INDEX in (blocked_indices(url) or ()), timeout,
            "Elasticsearch to block writes past the flood stage", interval=0.5,
        )  # fmt: skip
        yield
    finally:
        restore = {"persistent": before}
        wait_for(lambda: _answer("PUT", settings, json=restore) is not None, timeout, url)
        wait_for(
            lambda: blocked_indices(url) == set(), timeout,
            "Elasticsearch to lift the flood-stage block", interval=0.5,
        )  # fmt: skip
        requests.delete(f"{url}/{FLOOD_PROBE_INDEX}", timeout=30).raise_for_status()


#: hubkeeper's own JSON logs in the local stack (not the shipper's: it would ship itself)
DAEMON_LOGS = ("watcher", "export-containers", "cull", "watch-storage")


DOCUMENT_INTERVAL = 10.0  # seconds between the daemons' own documents in the local stack


def log_store_overrides(workdir: Path, elasticsearch_url: str) -> dict[str, dict[str, object]]:
    """The config sections that ship the local stack's logs (hub, proxy, NGINX, the
    daemons' JSON lines, user containers) and the daemons' own documents (container and
    storage snapshots, the shipper's status) into the Elasticsearch at
    ``elasticsearch_url``."""
    return {
        "shipper": {
            "state_dir": str(workdir / "shipper-state"),
            "status_interval": DOCUMENT_INTERVAL,
            "elasticsearch": {"hosts": [elasticsearch_url], "replicas": 0},
            "sources": [
                {"name": "hub", "paths": [f"{workdir}/logs/hub-*.log"], "parser": "jupyterhub"},
                {"name": "hubkeeper", "parser": "json", "paths": [
                    f"{workdir}/logs/{daemon}.log" for daemon in DAEMON_LOGS
                ]},
                {"name": "nginx-access", "paths": [f"{workdir}/nginx/logs/access.log*"],
                 "parser": "nginx_access"},
                {"name": "nginx-error", "paths": [f"{workdir}/nginx/logs/error.log*"],
                 "parser": "nginx_error"},
                {"name": "containers", "type": "docker"},
            ],
        },
        "containers": {"snapshot_interval": DOCUMENT_INTERVAL},
        "storage": {"snapshot_interval": DOCUMENT_INTERVAL},
    }  # fmt: skip


@contextlib.contextmanager
def running_log_store(
    workdir: Path, progress: Callable[[str], None] = print, version: str = ES_VERSION
) -> Iterator[dict[str, dict[str, object]]]:
    """Elasticsearch for ``hubkeeper up``; yields :func:`log_store_overrides` for it."""
    with running_elasticsearch(progress, version) as instance:
        yield log_store_overrides(workdir, instance.url)


def main(argv: list[str]) -> int:
    if argv != ["install"]:
        print("usage: python -m hubkeeper.deploy.elasticsearch install", file=sys.stderr)
        return 2
    for version in VERSIONS.values():
        print(install(version))
        java_home(version)  # fails early when no suitable JDK is there
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
