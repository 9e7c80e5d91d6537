"""The culler's decisions: pure functions of hub views, measured CPU and [culler]."""

import dataclasses

import pytest

from hubkeeper.config import CullerConfig, CullerRule
from hubkeeper.watchers.containers.reconcile import Orphan
from hubkeeper.watchers.culler.decide import decide_server, decide_user, limits, plan, still_idle
from hubkeeper.watchers.culler.model import (
    Hold,
    ServerView,
    UserView,
    parse_time,
    route_activity,
    user_view,
)
from hubkeeper.watchers.culler.storage import hold_from

NOW = 1_000_000.0
IMAGE = "hubkeeper/singleuser:latest"


def config(**values: object) -> CullerConfig:
    return CullerConfig(**{"timeout": 600.0, "busy_cpu_percent": 10.0, **values})


def server(
    name: str = "",
    idle: float | None = 700.0,
    age: float | None = 800.0,
    cpu: float | None = 0.0,
    image: str = IMAGE,
    **values: object,
) -> ServerView:
    return ServerView(
        user="alice",
        name=name,
        ready=values.pop("ready", True),  # type: ignore[arg-type]
        pending=values.pop("pending", None),  # type: ignore[arg-type]
        started=None if age is None else NOW - age,
        last_activity=None if idle is None else NOW - idle,
        image=image,
        cpu_percent=cpu,
        **values,  # type: ignore[arg-type]
    )


def user(*servers: ServerView, **values: object) -> UserView:
    fields = {
        "name": "alice",
        "admin": False,
        "groups": (),
        "created": NOW - 10_000,
        "last_activity": NOW - 5_000,
        "servers": servers,
    }
    return UserView(**{**fields, **values})  # type: ignore[arg-type]


def decide(s: ServerView, cfg: CullerConfig | None = None, **user_values: object):
    return decide_server(s, user(s, **user_values), cfg or config(), NOW)


# --- idle and max age, with jupyterhub-idle-culler's meaning --------------------------------


def test_idle_at_the_timeout_is_culled_just_below_is_kept() -> None:
    culled = decide(server(idle=600.0))
    assert (culled.action, culled.reason) == ("stop", "idle")
    assert culled.idle_seconds == 600.0 and culled.timeout == 600.0
    kept = decide(server(idle=599.0))
    assert (kept.action, kept.reason) == ("keep", "active")


def test_without_last_activity_the_start_time_counts() -> None:
    assert decide(server(idle=None, age=700.0)).reason == "idle"
    assert decide(server(idle=None, age=100.0)).reason == "active"
    assert decide(server(idle=None, age=None)).reason == "no_activity"


def test_max_age_culls_an_active_server_and_zero_means_no_limit() -> None:
    active_but_old = server(idle=5.0, age=4000.0)
    decision = decide(active_but_old, config(max_age=3600.0))
    assert (decision.action, decision.reason, decision.max_age) == ("stop", "max_age", 3600.0)
    assert decide(active_but_old, config(max_age=0.0)).reason == "active"


def test_kind_flags_limit_idle_culling_only_as_in_the_idle_culler() -> None:
    cfg = config(cull_default_servers=False, cull_named_servers=False)
    assert decide(server(""), cfg).reason == "default_servers_kept"
    assert decide(server("nb"), cfg).reason == "named_servers_kept"
    old = dataclasses.replace(cfg, max_age=100.0)
    assert decide(server("nb", age=800.0), old).reason == "max_age"


def test_named_servers_are_removed_only_when_asked() -> None:
    assert decide(server("nb")).action == "stop"
    cfg = config(remove_named_servers=True)
    assert decide(server("nb"), cfg).action == "stop_remove"
    assert decide(server(""), cfg).action == "stop"  # the default server cannot be removed


# --- exemptions and per-group / per-image limits --------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "groups", "reason"),
    [
        (config(exempt_users=["alice"]), (), "exempt_user"),
        (config(exempt_groups=["staff"]), ("students", "staff"), "exempt_group"),
        (config(exempt_images=[IMAGE]), (), "exempt_image"),
    ],
)
def test_exemptions_beat_idle_and_max_age(cfg: CullerConfig, groups: tuple, reason: str) -> None:
    cfg = dataclasses.replace(cfg, max_age=60.0)
    decision = decide(server(idle=10_000.0, age=10_000.0), cfg, groups=groups)
    assert (decision.action, decision.reason) == ("keep", reason)


def test_rules_by_group_and_image_first_match_wins() -> None:
    cfg = config(
        rules=[
            CullerRule(group="students", timeout=60.0),
            CullerRule(image="gpu:latest", timeout=120.0, max_age=3600.0),
            CullerRule(group="staff", max_age=7200.0),
        ]
    )
    assert limits(cfg, ["students"], "gpu:latest") == (60.0, 0.0)
    assert limits(cfg, ["other"], "gpu:latest") == (120.0, 3600.0)
    assert limits(cfg, ["staff"], IMAGE) == (600.0, 7200.0)  # only max_age set: timeout stays
    assert limits(cfg, [], IMAGE) == (600.0, 0.0)
    assert decide(server(idle=90.0), cfg, groups=("students",)).reason == "idle"
    assert decide(server(idle=90.0, image="gpu:latest"), cfg).reason == "active"
    assert decide(server(idle=90.0), cfg).reason == "active"


# --- busy protection ------------------------------------------------------------------------


def test_a_busy_server_is_kept_though_idle_and_may_report_its_activity() -> None:
    busy = server(idle=10_000.0, cpu=50.0)
    decision = decide(busy)
    assert (decision.action, decision.reason, decision.cpu_percent) == ("keep", "busy", 50.0)
    assert decision.report_activity is False
    assert decide(busy, config(report_activity=True)).report_activity is True
    assert decide(server(idle=10_000.0, cpu=9.9)).reason == "idle"
    assert decide(busy, config(busy_cpu_percent=0.0)).reason == "idle"  # protection off


def test_busy_protection_does_not_stop_max_age() -> None:
    decision = decide(server(idle=10_000.0, age=10_000.0, cpu=90.0), config(max_age=3600.0))
    assert decision.reason == "max_age"


def test_unknown_cpu_keeps_unless_configured_to_cull() -> None:
    unknown = server(idle=10_000.0, cpu=None)
    assert decide(unknown).reason == "cpu_unknown"
    assert decide(unknown, config(busy_unknown="cull")).reason == "idle"
    assert decide(unknown, config(busy_cpu_percent=0.0)).reason == "idle"


# --- pending and not-ready servers ------------------------------------------------------------


def test_pending_servers_are_kept_until_stuck() -> None:
    spawning = server(idle=None, age=100.0, pending="spawn", ready=False)
    assert (decide(spawning).action, decide(spawning).reason) == ("keep", "pending")
    stuck = server(idle=None, age=400.0, pending="spawn", ready=False)
    assert (decide(stuck).action, decide(stuck).reason) == ("report", "stuck_spawn")
    assert decide(stuck, config(stop_stuck=True)).action == "stop"
    exempt = config(stop_stuck=True, exempt_users=["alice"])
    assert decide(stuck, exempt).action == "report"


def test_a_stuck_stop_is_reported_never_stopped_again() -> None:
    stopping = server(pending="stop", pending_since=NOW - 400.0)
    decision = decide(stopping, config(stop_stuck=True))
    assert (decision.action, decision.reason) == ("report", "stuck_stop")
    fresh = server(pending="stop", pending_since=NOW - 10.0)
    assert decide(fresh).reason == "pending"


def test_a_server_neither_ready_nor_pending_is_left_alone() -> None:
    assert decide(server(ready=False)).reason == "not_ready"


# --- users -------------------------------------------------------------------------------------


def user_decision(u: UserView, cfg: CullerConfig):
    servers = [decide_server(s, u, cfg, NOW) for s in u.servers]
    return decide_user(u, servers, cfg, NOW)


def test_users_are_only_considered_with_cull_users() -> None:
    assert user_decision(user(), config()) is None
    decision = user_decision(user(), config(cull_users=True))
    assert (decision.kind, decision.action, decision.reason) == ("user", "delete", "idle")


def test_a_user_is_kept_while_any_server_is_kept() -> None:
    cfg = config(cull_users=True)
    assert user_decision(user(server(idle=10.0)), cfg).reason == "servers_running"
    assert user_decision(user(server(idle=10_000.0)), cfg).action == "delete"


def test_admins_are_protected_even_from_max_age() -> None:
    cfg = config(cull_users=True, cull_admin_users=False, max_age=60.0)
    assert user_decision(user(admin=True), cfg).reason == "admin"
    assert (
        user_decision(user(admin=True), dataclasses.replace(cfg, cull_admin_users=True)).action
        == "delete"
    )


def test_user_age_and_activity() -> None:
    cfg = config(cull_users=True, max_age=3600.0)
    recent = user(last_activity=NOW - 10, created=NOW - 7200)
    assert user_decision(recent, cfg).reason == "max_age"
    assert user_decision(dataclasses.replace(recent, created=NOW - 60), cfg).reason == "active"
    never_active = user(last_activity=None, created=NOW - 700)
    assert user_decision(never_active, config(cull_users=True)).reason == "idle"


def test_exempt_users_are_never_deleted() -> None:
    cfg = config(cull_users=True, exempt_groups=["staff"])
    assert user_decision(user(groups=("staff",)), cfg).reason == "exempt_group"


# --- orphans and the plan --------------------------------------------------------------


def test_orphans_are_removed_only_when_enabled() -> None:
    orphan = Orphan("ghost", "", "jupyter-ghost")
    _, reported = plan([], [orphan], config(orphans="report"), NOW)
    assert [(d.kind, d.action, d.container) for d in reported] == [
        ("orphan", "report", "jupyter-ghost")
    ]
    _, removed = plan([], [orphan], config(orphans="remove"), NOW)
    assert removed[0].action == "remove_container"


def test_plan_keeps_servers_then_user_per_user() -> None:
    a = user(server(""), server("nb", idle=5.0))
    plans, _ = plan([a], [], config(cull_users=True), NOW)
    assert [(d.server, d.action) for d in plans[0].servers] == [("", "stop"), ("nb", "keep")]
    assert plans[0].user is not None and plans[0].user.reason == "servers_running"


# --- reading the hub's models -----------------------------------------------------------


def test_parse_time_reads_the_hubs_timestamps() -> None:
    assert parse_time("1970-01-01T00:00:10.500000Z") == 10.5
    assert parse_time("1970-01-01T01:00:00+01:00") == 0.0
    assert parse_time("1970-01-01T00:00:10") == 10.0  # naive is UTC
    assert parse_time(None) is None and parse_time("") is None


def test_user_view_from_a_model_without_optional_fields() -> None:
    model = {
        "name": "bob",
        "last_activity": "1970-01-01T00:01:40Z",
        "servers": {
            "nb": {"ready": True, "pending": None, "started": "1970-01-01T00:00:10Z",
                   "last_activity": None, "user_options": {"image": "alt"}},
        },
    }  # fmt: skip
    view = user_view(
        model,
        image_of=lambda u, s, m: m["user_options"]["image"],
        cpu_of=lambda u, s: 12.5,
        pending_since={("bob", "nb"): 5.0},
    )
    assert (view.admin, view.groups, view.created, view.last_activity) == (False, (), None, 100.0)
    (nb,) = view.servers
    assert (nb.name, nb.started, nb.last_activity, nb.image) == ("nb", 10.0, None, "alt")
    assert (nb.cpu_percent, nb.pending_since) == (12.5, 5.0)


# --- storage: a node whose notebook storage is hung -----------------------------------------


def test_an_idle_server_on_a_node_with_hung_storage_is_reported_not_stopped() -> None:
    hold = hold_from([{"node": "n1", "hung": ["notebooks"], "servers": [{"user": "alice"}]}])
    plans, _ = plan([user(server())], [], config(cull_users=True), NOW, [hold])
    (decision,) = plans[0].servers
    assert (decision.action, decision.reason) == ("report", "storage_hung")
    assert plans[0].user is not None and plans[0].user.action == "keep"  # not deleted either


def test_servers_on_other_nodes_and_kept_servers_are_untouched_by_a_hold() -> None:
    hold = hold_from([{"node": "n1", "hung": ["nb"], "servers": [{"user": "bob", "server": ""}]}])
    users = [user(server()), user(server(idle=10.0), name="bob")]
    plans, _ = plan(users, [], config(), NOW, [hold])
    assert plans[0].servers[0].action == "stop"
    assert (plans[1].servers[0].action, plans[1].servers[0].reason) == ("keep", "active")


def test_culling_resumes_when_the_mount_answers_again() -> None:
    hold = hold_from([{"node": "n1", "hung": [], "servers": [{"user": "alice", "server": ""}]}])
    assert hold == Hold("storage_hung")  # holds nothing
    plans, _ = plan([user(server())], [], config(), NOW, [hold])
    assert plans[0].servers[0].action == "stop"


def test_a_hung_node_that_cannot_name_its_servers_holds_every_stop_and_orphan() -> None:
    hold = hold_from([{"node": "n2", "hung": ["nb"], "servers": None}, {"node": "n1", "hung": []}])
    orphan = Orphan(user="carol", server="", container="jupyter-carol")
    plans, orphans = plan([user(server())], [orphan], config(orphans="remove"), NOW, [hold])
    assert plans[0].servers[0].reason == "storage_hung"
    assert (orphans[0].action, orphans[0].reason) == ("report", "storage_hung")
    assert hold.nodes == ("n2",)


def test_a_named_server_is_held_by_its_own_name_only() -> None:
    hold = hold_from(
        [{"node": "n1", "hung": ["nb"], "servers": [{"user": "alice", "server": "gpu"}]}]
    )
    plans, _ = plan([user(server("gpu"), server(""))], [], config(), NOW, [hold])
    assert [d.reason for d in plans[0].servers] == ["storage_hung", "idle"]


def test_servers_on_a_swarm_node_that_is_down_are_reported_not_stopped() -> None:
    down = Hold("node_down", frozenset({("alice", "")}), nodes=("hk-node3",))
    storage = hold_from([{"node": "n1", "hung": ["nb"], "servers": [{"user": "bob"}]}])
    users = [user(server()), user(server(), name="bob"), user(server(), name="carol")]
    plans, _ = plan(users, [], config(), NOW, [down, storage])
    reasons = [(p.servers[0].action, p.servers[0].reason) for p in plans]
    assert reasons == [("report", "node_down"), ("report", "storage_hung"), ("stop", "idle")]


def test_a_user_back_between_the_look_and_the_stop_keeps_the_server() -> None:
    """The chaos soak found it: the culler stopped a server 4 s after its user came back."""
    stop = decide(server(idle=700.0))
    assert (stop.action, stop.reason) == ("stop", "idle")
    assert still_idle(stop, NOW - 700, NOW + 5)
    assert not still_idle(stop, NOW + 2, NOW + 5)  # used again just now
    assert still_idle(stop, None, NOW + 5)  # nothing newer known: the plan stands
    max_age = dataclasses.replace(stop, reason="max_age")
    assert still_idle(max_age, NOW + 2, NOW + 5)  # max_age stops an active server anyway


def test_a_proxys_routes_give_each_server_its_latest_activity() -> None:
    day = "2026-12-02T18:00"
    routes = {
        "/": {"target": "http://127.0.0.1:8081", "last_activity": f"{day}:09Z"},
        "/user/ann/": {"user": "ann", "server_name": "", "last_activity": f"{day}:05Z"},
        "/user/ann/lab/": {"user": "ann", "server_name": "lab", "last_activity": f"{day}:07.5Z"},
        "/x/user/ann/": {"user": "ann", "last_activity": f"{day}:06Z"},  # another base_url
        "/user/bob/": {"user": "bob", "server_name": "", "last_activity": "garbage"},
        "/user/cy/": {"user": "cy", "server_name": ""},
        "/odd": "not a route",
    }  # fmt: skip
    assert route_activity(routes, "ann", "") == parse_time(f"{day}:06Z")
    assert route_activity(routes, "ann", "lab") == parse_time(f"{day}:07.5Z")
    assert route_activity(routes, "bob", "") is None  # unreadable: the hub's view decides
    assert route_activity(routes, "cy", "") is None
    assert route_activity(routes, "dee", "") is None
