"""The culler's reports: CPU shares, metrics, PRTG sensor, audit lines, and its hub scopes."""

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from hubkeeper import prtg
from hubkeeper.config import CullerConfig, CullerRule
from hubkeeper.hub.settings import SERVICE_SCOPES, apply, culler_scopes
from hubkeeper.loader import from_dict
from hubkeeper.watchers.culler.activity import cpu_share, prune
from hubkeeper.watchers.culler.model import Decision
from hubkeeper.watchers.culler.report import CycleReport, Metrics, Outcome, audit, sensor


def test_cpu_share_is_percent_of_one_cpu_over_the_samples() -> None:
    samples = [(100.0, 50.0), (110.0, 55.0), (120.0, 70.0)]
    assert cpu_share(samples, min_span=5.0) == 100.0  # 20 CPU seconds in 20 s
    assert cpu_share(samples[:1], min_span=5.0) is None
    assert cpu_share([(100.0, 1.0), (103.0, 2.0)], min_span=5.0) is None  # too short to tell
    assert cpu_share([(100.0, 9.0), (110.0, 1.0)], min_span=5.0) == 0.0  # counter reset


def test_prune_keeps_the_window() -> None:
    samples = [(float(t), 0.0) for t in range(0, 100, 10)]
    assert [t for t, _ in prune(samples, now=100.0, window=30.0)] == [70.0, 80.0, 90.0]


def outcome(kind: str, action: str, reason: str, result: str, server: str | None = "") -> Outcome:
    decision = Decision(kind=kind, user="alice", server=server, action=action, reason=reason)  # type: ignore[arg-type]
    return Outcome(decision, result)  # type: ignore[arg-type]


REPORT = CycleReport(
    time=1000.0,
    duration=1.5,
    ok=True,
    dry_run=False,
    users_seen=3,
    servers_seen=4,
    api_requests=5,
    outcomes=(
        outcome("server", "stop", "idle", "done"),
        outcome("server", "stop_remove", "idle", "stopping", server="nb"),
        outcome("server", "keep", "busy", "activity_reported", server="gpu"),
        outcome("server", "report", "stuck_spawn", "reported", server="x"),
        outcome("server", "stop", "max_age", "error", server="y"),
        outcome("orphan", "report", "orphan", "reported"),
    ),
)


def test_metrics_count_culls_skips_and_errors() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.record(REPORT, requests=5)
    metrics.record(CycleReport(time=0.0, duration=0.1, ok=False, dry_run=False), requests=5)
    text = generate_latest(registry).decode()
    for line in (
        'hubkeeper_culler_culls_total{kind="default_server",reason="idle"} 1.0',
        'hubkeeper_culler_culls_total{kind="named_server",reason="idle"} 1.0',
        'hubkeeper_culler_skips_total{kind="named_server",reason="busy"} 1.0',
        'hubkeeper_culler_errors_total{action="stop"} 1.0',
        'hubkeeper_culler_errors_total{action="list_users"} 1.0',
        'hubkeeper_culler_cycles_total{result="ok"} 1.0',
        'hubkeeper_culler_cycles_total{result="error"} 1.0',
        "hubkeeper_culler_hub_requests_total 10.0",
        "hubkeeper_culler_activity_reports_total 1.0",
        "hubkeeper_culler_stuck_servers 1.0",
        "hubkeeper_culler_orphan_containers 1.0",
        "hubkeeper_culler_servers_seen 4.0",
    ):
        assert line in text, line


def test_prtg_sensor_is_valid_in_every_state() -> None:
    payloads = [
        sensor(None, acting=True, age=None, interval=300.0),
        sensor(None, acting=False, age=None, interval=300.0),
        sensor(REPORT, acting=True, age=12.5, interval=300.0),
        sensor(CycleReport(0.0, 0.1, False, False, "GET /users: 503"), True, None, 300.0),
    ]
    for payload in payloads:
        assert prtg.check(payload) == [], payload
    channels = {c["channel"]: c["value"] for c in payloads[2]["prtg"]["result"]}
    assert channels["Culled servers"] == 2
    assert channels["Kept busy"] == 1
    assert channels["Stuck servers"] == 1 and channels["Errors"] == 1
    assert "culled: alice, alice/nb" in payloads[2]["prtg"]["text"]
    assert "standby" in payloads[1]["prtg"]["text"]
    assert payloads[3]["prtg"]["error"] == 1


def test_audit_line_carries_the_decision(json_logs) -> None:
    decision = Decision(
        kind="server", user="alice", server="", action="stop", reason="idle",
        idle_seconds=700.04, cpu_percent=1.26, timeout=600.0,
    )  # fmt: skip
    audit(Outcome(decision, "dry_run"), dry_run=True)
    (event,) = [e for e in json_logs() if e["event"] == "cull_decision"]
    assert event["user"] == "alice" and event["server"] == ""
    assert (event["action"], event["reason"], event["result"]) == ("stop", "idle", "dry_run")
    assert (event["idle_seconds"], event["cpu_percent"], event["dry_run"]) == (700.0, 1.3, True)


def test_culler_scopes_follow_what_is_enabled() -> None:
    assert culler_scopes(CullerConfig()) == []
    assert culler_scopes(CullerConfig(report_activity=True)) == ["users:activity"]
    assert culler_scopes(CullerConfig(rules=[CullerRule(group="s", timeout=5.0)])) == [
        "read:users:groups"
    ]
    assert culler_scopes(CullerConfig(cull_users=True)) == ["delete:users", "read:users"]
    assert "delete:users" not in SERVICE_SCOPES["hubkeeper-culler"]


def test_the_hub_runs_the_culler_as_a_managed_service(tmp_path: Path, monkeypatch) -> None:
    from traitlets.config import Config as TraitletsConfig

    tokens = tmp_path / "services"
    tokens.mkdir()
    (tokens / "hubkeeper-culler.token").write_text("culler-token\n")
    config_file = tmp_path / "hubkeeper.toml"
    monkeypatch.setenv("HUBKEEPER_CONFIG", str(config_file))
    config = from_dict(
        {
            "jupyterhub": {"services_token_dir": str(tokens), "last_activity_interval": 5},
            "culler": {"managed_service": True, "cull_users": True},
        }
    )
    c = TraitletsConfig()
    apply(c, config, "a")
    (service,) = c.JupyterHub.services
    assert service["command"][-4:] == ["hubkeeper.cli", "cull", "--config", str(config_file)]
    assert service["environment"] == {"HUBKEEPER_CONFIG": str(config_file)}
    (role,) = [r for r in c.JupyterHub.load_roles if r["services"] == ["hubkeeper-culler"]]
    assert "delete:users" in role["scopes"]
    assert c.JupyterHub.last_activity_interval == 5
