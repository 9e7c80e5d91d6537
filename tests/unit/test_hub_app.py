"""hubkeeper's JupyterHub: a start counts as activity of the running servers (on the hub's
own database schema, in SQLite)."""

from datetime import datetime, timedelta

from jupyterhub import orm

from hubkeeper.hub.app import count_start_as_activity

START = datetime(2026, 12, 2, 18, 0, 0)


def test_a_start_moves_the_activity_of_running_servers_and_their_users_up_to_it() -> None:
    db = orm.new_session_factory("sqlite://")()
    old, later = START - timedelta(minutes=50), START + timedelta(seconds=3)

    def user(name: str, server: bool, activity: datetime | None) -> orm.Spawner:
        row = orm.User(name=name, last_activity=activity)
        spawner = orm.Spawner(name="", user=row, last_activity=activity)
        if server:
            spawner.server = orm.Server(port=8888)
        db.add_all([row, spawner])
        return spawner

    idle = user("idle", True, old)
    never = user("never", True, None)
    ahead = user("ahead", True, later)  # (a clock ahead of the hub's: left as it is)
    stopped = user("stopped", False, old)
    db.commit()

    assert count_start_as_activity(db, START) == 3
    db.expire_all()
    assert (idle.last_activity, idle.user.last_activity) == (START, START)
    assert (never.last_activity, never.user.last_activity) == (START, START)
    assert (ahead.last_activity, ahead.user.last_activity) == (later, later)
    assert (stopped.last_activity, stopped.user.last_activity) == (old, old)
