"""Who may act, when watchers run on several hosts: a lease with an expiry in PostgreSQL.

Exactly one watcher holds the lease. It renews it well within its time to live; a watcher
that cannot renew (the database is unreachable, the process was paused) stops acting once
its *own* clock says the lease may have run out, before the database lets anyone else take
it. Every time the lease changes hands (or lapses and is taken again) its ``generation``
grows: that number is the fencing token every action carries, so whatever the watcher
changes (the shared state here, NGINX and hubs through their hosts' agents) refuses a
former leader that wakes up late.

The database clock alone decides expiry (``clock_timestamp()``), so the watchers' clocks need
not agree; each watcher only measures its own elapsed time.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hubkeeper.log import get_logger
from hubkeeper.redact import Secret

log = get_logger(__name__)

#: The share of the time to live a leader trusts its lease for, counted from the moment it
#: sent the renewal: the rest absorbs clock-rate differences and the renewal's own delay.
TRUSTED_SHARE = 0.75

SCHEMA = """
CREATE TABLE IF NOT EXISTS hubkeeper_lease (
    name text PRIMARY KEY,
    holder text NOT NULL,
    generation bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS hubkeeper_watcher_state (
    name text PRIMARY KEY,
    state jsonb NOT NULL,
    generation bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS hubkeeper_watcher_request (
    name text PRIMARY KEY,
    target text NOT NULL
);
"""

#: Take a free or lapsed lease (a new generation), or renew one's own live lease (the same).
ACQUIRE = """
INSERT INTO hubkeeper_lease AS l (name, holder, generation, expires_at)
VALUES (%(name)s, %(holder)s, 1, clock_timestamp() + make_interval(secs => %(ttl)s))
ON CONFLICT (name) DO UPDATE
SET holder = EXCLUDED.holder,
    generation = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > clock_timestamp()
                      THEN l.generation ELSE l.generation + 1 END,
    expires_at = EXCLUDED.expires_at
WHERE l.holder = EXCLUDED.holder OR l.expires_at <= clock_timestamp()
RETURNING generation
"""

#: Write the state only while holding the lease of that generation (the fencing check).
SAVE_STATE = """
INSERT INTO hubkeeper_watcher_state AS s (name, state, generation)
SELECT %(name)s, %(state)s, %(generation)s
WHERE EXISTS (
    SELECT 1 FROM hubkeeper_lease
    WHERE name = %(name)s AND holder = %(holder)s AND generation = %(generation)s
      AND expires_at > clock_timestamp()
)
ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state, generation = EXCLUDED.generation
WHERE s.generation <= EXCLUDED.generation
"""


class LeaseStoreError(RuntimeError):
    """The lease store could not be reached or refused the statement."""


class LeaseLost(RuntimeError):
    """This watcher does not (or no longer) hold the lease: it must not act."""


@dataclass(frozen=True)
class Lease:
    generation: int
    trusted_until: float  # this process's monotonic clock

    def valid(self, now: float) -> bool:
        return now < self.trusted_until


def trusted_lease(generation: int, sent_at: float, ttl: float) -> Lease:
    """The lease as the holder may rely on it: the database's expiry is at least ``ttl``
    after the renewal was sent, so a share of ``ttl`` from ``sent_at`` is safe."""
    return Lease(generation, sent_at + ttl * TRUSTED_SHARE)


def holder_id() -> str:
    """A holder name unique to this process: a restarted watcher is a new holder."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


class PostgresLeaseStore:
    """The lease and the watcher's shared state in one PostgreSQL database."""

    def __init__(self, url: str, password: Secret | None, name: str, timeout: float) -> None:
        self.url = url
        self.password = password
        self.name = name
        self.timeout = timeout
        self._connection: Any = None
        self._lock = threading.Lock()  # one statement at a time on the one connection

    def _connect(self) -> Any:
        import psycopg  # the watcher's lease mode only

        milliseconds = int(self.timeout * 1000)
        return psycopg.connect(
            self.url,
            password=self.password.reveal() if self.password is not None else None,
            autocommit=True,
            connect_timeout=max(1, int(self.timeout)),
            application_name="hubkeeper-watcher",
            options=f"-c statement_timeout={milliseconds}",
            tcp_user_timeout=milliseconds,  # a cut link fails the statement, never hangs it
        )

    def execute(self, sql: str, params: dict[str, Any]) -> tuple[list[tuple[Any, ...]], int]:
        """Rows and row count of one statement; a failure drops the connection for the next."""
        import psycopg

        with self._lock:
            try:
                if self._connection is None:
                    self._connection = self._connect()
                    self._connection.execute(SCHEMA)
                cursor = self._connection.execute(sql, params)
                rows = cursor.fetchall() if cursor.description else []
                return rows, cursor.rowcount
            except psycopg.Error as error:
                if self._connection is not None:
                    self._connection.close()
                self._connection = None
                raise LeaseStoreError(f"{type(error).__name__}: {str(error).strip()}") from None

    def acquire(self, holder: str, ttl: float) -> int | None:
        """The lease's generation if ``holder`` holds it now, else None."""
        rows, _ = self.execute(ACQUIRE, {"name": self.name, "holder": holder, "ttl": ttl})
        return int(rows[0][0]) if rows else None

    def release(self, holder: str, generation: int) -> None:
        """Let the lease lapse now (a clean stop: the other watcher need not wait it out)."""
        self.execute(
            "UPDATE hubkeeper_lease SET expires_at = clock_timestamp()"
            " WHERE name = %(name)s AND holder = %(holder)s AND generation = %(generation)s",
            {"name": self.name, "holder": holder, "generation": generation},
        )

    def holder(self) -> tuple[str, int, float] | None:
        """Holder, generation and seconds left (negative: lapsed) of the lease, if any."""
        rows, _ = self.execute(
            "SELECT holder, generation, extract(epoch FROM expires_at - clock_timestamp())"
            " FROM hubkeeper_lease WHERE name = %(name)s",
            {"name": self.name},
        )
        return (rows[0][0], int(rows[0][1]), float(rows[0][2])) if rows else None

    def end_sessions(self, application_name: str) -> int:
        """End the sessions of ``application_name`` (a hub instance's); how many there were."""
        rows, _ = self.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %(name)s",
            {"name": application_name},
        )
        return int(rows[0][0])

    def load_state(self) -> dict[str, Any] | None:
        rows, _ = self.execute(
            "SELECT state FROM hubkeeper_watcher_state WHERE name = %(name)s", {"name": self.name}
        )
        return dict(rows[0][0]) if rows else None

    def save_state(self, state: dict[str, Any], holder: str, generation: int) -> None:
        _, count = self.execute(
            SAVE_STATE,
            {
                "name": self.name,
                "state": json.dumps(state),
                "holder": holder,
                "generation": generation,
            },
        )
        if count != 1:
            raise LeaseLost(f"the state was not written: lease generation {generation} is over")

    def request_switch(self, target: str) -> None:
        self.execute(
            "INSERT INTO hubkeeper_watcher_request (name, target) VALUES (%(name)s, %(target)s)"
            " ON CONFLICT (name) DO UPDATE SET target = EXCLUDED.target",
            {"name": self.name, "target": target},
        )

    def take_request(self) -> str | None:
        rows, _ = self.execute(
            "DELETE FROM hubkeeper_watcher_request WHERE name = %(name)s RETURNING target",
            {"name": self.name},
        )
        return str(rows[0][0]) if rows else None


class LeaseKeeper:
    """Renews the lease on a schedule of its own, and says whether this watcher may act."""

    def __init__(
        self,
        store: PostgresLeaseStore,
        ttl: float,
        holder: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.holder = holder or holder_id()
        self.clock = clock
        self.lease: Lease | None = None
        self.error: str | None = None  # why the last renewal failed; None: it got through

    def renew(self) -> None:
        sent = self.clock()
        try:
            generation = self.store.acquire(self.holder, self.ttl)
        except LeaseStoreError as error:
            if self.error is None:
                log.error("lease_store_unreachable", error=str(error))
            self.error = str(error)
            return
        if self.error is not None:
            log.info("lease_store_reachable")
        self.error = None
        before = self.lease.generation if self.lease is not None else None
        self.lease = trusted_lease(generation, sent, self.ttl) if generation is not None else None
        if generation is not None and generation != before:
            log.warning("lease_acquired", holder=self.holder, generation=generation)

    def leading(self) -> bool:
        return self.lease is not None and self.lease.valid(self.clock())

    def token(self) -> int:
        """The fencing token for an action now; raises when this watcher may not act."""
        lease = self.lease
        if lease is None or not lease.valid(self.clock()):
            raise LeaseLost("this watcher does not hold a live lease")
        return lease.generation

    def release(self) -> None:
        lease, self.lease = self.lease, None
        if lease is not None:
            try:
                self.store.release(self.holder, lease.generation)
            except LeaseStoreError as error:
                log.warning("lease_release_failed", error=str(error))
