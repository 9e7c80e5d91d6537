"""A throwaway PostgreSQL cluster for the tests and benchmarks: Debian's server, run unprivileged.

PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres`` system user
(Debian's package creates it) through ``runuser``; its data, socket and log live in a folder of
their own that this user owns (not under the caller's folder, which it may not be able to
enter). The system's own clusters are neither used nor touched.

Local connections (the Unix socket in that private folder, which only ``postgres`` and root can
reach) are trusted: the administrator's connection, :meth:`Postgres.admin`. TCP connections
need a password (``scram-sha-256``): one role and one database, both :data:`DATABASE`, whose
password is written to ``<workdir>/postgres-password`` (mode 0600) and never passed on a
command line. :attr:`Postgres.url` carries no password: hubkeeper's
``jupyterhub.database_password_file`` names the file.

With ``namespace=NAME`` the server is started inside the network namespace
``/run/netns/NAME`` (``nsenter``), to listen on a test host's address there; the socket is a
file, so :meth:`Postgres.admin` still works from the root namespace.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

from hubkeeper.deploy.stack import free_ports, wait_for
from hubkeeper.files import write_atomically

PG_USER = "postgres"
DATABASE = "jupyterhub"  # the role and the database


def bin_dir() -> Path:
    """The newest installed server's programs (Debian keeps them off ``PATH``)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("no PostgreSQL server: install postgresql (deploy/setup.sh does)")
    return Path(initdb).parent


class Postgres:
    """A cluster on ``listen``:``port`` (a free port if none is given), started on ``with``
    and stopped, its folder removed, on leaving (its log is copied into ``workdir`` first)."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        listen: str = "127.0.0.1",
        namespace: str | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.port = port if port is not None else free_ports(1)[0]
        self.listen = listen
        self.namespace = namespace
        self.password_file = self.workdir / "postgres-password"
        self.root: Path | None = None

    @property
    def url(self) -> str:
        """The database's URL for the hubs, without the password (see ``password_file``)."""
        return f"postgresql://{DATABASE}@{self.listen}:{self.port}/{DATABASE}"

    @property
    def data(self) -> Path:
        if self.root is None:
            raise RuntimeError("the cluster has not been started")
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.data.parent / "postgres.log"

    def _as_server_user(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", PG_USER, "--", *argv] if os.geteuid() == 0 else argv

    def start(self) -> Postgres:
        """``initdb`` and ``pg_ctl start`` (about a second), then the role and the database."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="hubkeeper-pg-"))
        if os.geteuid() == 0:
            entry = pwd.getpwnam(PG_USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        programs = bin_dir()
        initdb = [str(programs / "initdb"), "--no-sync", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "-U", PG_USER, "-D", str(self.data)]  # fmt: skip
        done = subprocess.run(self._as_server_user(initdb), capture_output=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.decode(errors='replace')[-2000:]}")
        with (self.data / "pg_hba.conf").open("a", encoding="utf-8") as hba:
            hba.write("host all all all scram-sha-256\n")  # a test host's address, too
        options = f"-p {self.port} -k {self.root} -c listen_addresses={self.listen}"
        start = [str(programs / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                 "-o", options, "-w", "-t", "60", "start"]  # fmt: skip
        start = self._as_server_user(start)
        if self.namespace is not None:  # entered as root, then run as the server user
            start = ["nsenter", f"--net=/run/netns/{self.namespace}", *start]
        done = subprocess.run(start, capture_output=True, timeout=90)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
            raise RuntimeError(f"PostgreSQL did not start ({output.strip()}); see {self.log}")
        password = secrets.token_urlsafe(24)
        with self.admin() as connection:
            connection.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(DATABASE), sql.Literal(password)
                )
            )
            connection.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(DATABASE), sql.Identifier(DATABASE)
                )
            )
        write_atomically(self.password_file, password.encode() + b"\n", mode=0o600)
        return self

    def admin(self, dbname: str = "postgres") -> psycopg.Connection:
        """A superuser connection over the cluster's own socket (autocommit)."""
        return psycopg.connect(
            host=str(self.root), port=self.port, user=PG_USER, dbname=dbname, autocommit=True
        )

    def pid(self) -> int | None:
        """The server's PID, from its own ``postmaster.pid``, while that process runs (a
        reused PID or a zombie does not count: the command line must name this cluster)."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError, RuntimeError):
            return None
        return pid if str(self.data).encode() in command else None

    def stop(self, timeout: float = 10.0) -> None:
        """Fast shutdown (SIGINT) of the server in the PID file, immediate (SIGQUIT) if it is
        still there after ``timeout``."""
        for signum, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0)):
            pid = self.pid()
            if pid is None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: self.pid() is None, wait, "PostgreSQL to stop", interval=0.05)
        if self.pid() is not None:
            raise RuntimeError(f"PostgreSQL (pid {self.pid()}) did not stop; see {self.log}")

    def __enter__(self) -> Postgres:
        try:
            return self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.root is None:
            return
        try:
            self.stop()
        finally:
            with contextlib.suppress(OSError):
                shutil.copyfile(self.log, self.workdir / "postgres.log")
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
