"""hubkeeper's JupyterHub: the standard app with one change at start.

A hub that starts (a failover's standby, a restart) cannot know what users did while no
hub read a proxy's routes: requests through the old proxy after the old hub last read
them (up to ``last_activity_interval``, 300 s by default) and during the outage. Until its
own first read, one ``last_activity_interval`` after it starts answering, its database
holds the old hub's view, and a culler asking in between takes a server in use for idle
(the chaos soak caught one, culled 27 s after its last request with a 40 s timeout).

So a start counts as activity of every running server and of its user, written before the
hub answers. That is what the hub records anyway at its first read when its proxy is new
(the proxy stamps each route it adds: the failover's case); where the proxy lived on, an
idle server is culled one idle timeout after the start instead of at once.
"""

from __future__ import annotations

from datetime import datetime

from jupyterhub import orm
from jupyterhub.app import JupyterHub
from jupyterhub.utils import utcnow
from sqlalchemy.orm import Session


def count_start_as_activity(db: Session, now: datetime) -> int:
    """Move the last activity of every running server, and of its user, up to ``now``
    (naive UTC, as the hub's database keeps it); the number of running servers."""
    running = db.query(orm.Spawner).filter(orm.Spawner.server_id.isnot(None)).all()
    for spawner in running:
        for row in (spawner, spawner.user):
            if row.last_activity is None or row.last_activity < now:
                row.last_activity = now
    db.commit()
    return len(running)


class Hub(JupyterHub):
    """JupyterHub whose start counts as activity of the running servers."""

    async def init_spawners(self) -> None:
        # before the checks of the servers (and the hub's port) can make anyone wait
        running = count_start_as_activity(self.db, utcnow(with_tz=False))
        self.log.info("Start counted as activity of %d running servers", running)
        await super().init_spawners()
