"""The alert rules' contract with on-call, the [alerts] config, and what render writes."""

import re
import stat
from pathlib import Path

import pytest
import yaml

from hubkeeper.alerts.render import (
    DEFAULT_RUNBOOK_BASE,
    DURATION,
    FOLLOWS_ANY_HUB,
    FOLLOWS_PER_HUB,
    FOLLOWS_STORAGE,
    HUB_DOWN,
    RULES_DIR,
    RUNBOOKS_DIR,
    STORAGE_DOWN,
    duration,
    render,
    seconds_of,
)
from hubkeeper.cli import main
from hubkeeper.config import AlertsConfig, ConfigError
from hubkeeper.loader import from_dict

WATCHER_SOURCE = Path(__file__).resolve().parents[2] / "watchers" / "hubs" / "report.py"


def rules() -> list[dict]:
    return [
        rule
        for path in sorted(RULES_DIR.glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def pushed_alerts() -> set[str]:
    """The alert names the hub watcher pushes to Alertmanager itself."""
    return set(re.findall(r'"(Hubkeeper[A-Za-z]+)"', WATCHER_SOURCE.read_text()))


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_every_rule_tells_on_call_what_and_where_and_what_to_do(rule: dict) -> None:
    name, labels, notes = rule["alert"], rule["labels"], rule["annotations"]
    assert labels["severity"] in ("critical", "warning")
    assert labels["team"] in ("platform", "logging")
    assert set(notes) == {"summary", "description", "runbook_url"}
    assert notes["runbook_url"] == f"{DEFAULT_RUNBOOK_BASE}/{name}.md"
    if name != "Watchdog":  # the description names the hub, user, container or instance
        assert "$labels." in notes["description"], name


def test_every_alert_has_a_runbook_with_confirm_mitigate_fix() -> None:
    names = {rule["alert"] for rule in rules()} | pushed_alerts()
    pages = {path.stem for path in RUNBOOKS_DIR.glob("*.md")} - {"README"}
    assert names == pages
    for name in names:
        text = (RUNBOOKS_DIR / f"{name}.md").read_text()
        assert text.startswith(f"# {name} (")
        for section in ("## Confirm", "## Mitigate", "## Fix"):
            assert section in text, f"{name}.md lacks {section}"


def test_rules_and_watcher_pushes_that_share_a_name_share_the_severity() -> None:
    source = WATCHER_SOURCE.read_text()
    for rule in rules():
        if rule["alert"] in pushed_alerts():
            pushed = re.search(rf'"{rule["alert"]}",\s*"(\w+)"', source)
            if pushed:  # alerts built with a severity literal next to their name
                assert pushed[1] == rule["labels"]["severity"], rule["alert"]
    assert {"HubkeeperFailover", "HubkeeperFenceFailed"} <= {r["alert"] for r in rules()}


def test_inhibition_names_alerts_that_exist() -> None:
    known = {rule["alert"] for rule in rules()} | pushed_alerts()
    named = HUB_DOWN + FOLLOWS_PER_HUB + FOLLOWS_ANY_HUB + STORAGE_DOWN + FOLLOWS_STORAGE
    assert set(named) <= known


def test_the_watcher_and_the_rules_use_the_same_runbook_base() -> None:
    assert AlertsConfig().runbook_base_url == DEFAULT_RUNBOOK_BASE


@pytest.mark.parametrize(
    ("seconds", "text"), [(15, "15s"), (0.5, "500ms"), (90, "1m30s"), (14400, "4h"), (0, "0s")]
)
def test_durations(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_config_problems_name_the_key() -> None:
    with pytest.raises(ConfigError) as error:
        from_dict(
            {
                "alerts": {
                    "daemons": ["watcher", "nope"],
                    "scrape_timeout": 20.0,
                    "pager": {"email_to": ["not an address"]},
                    "smtp": {"smarthost": "mail.lab", "username": "alerts"},
                    "teams": [{"name": "ops"}, {"name": "ops"}],
                }
            }
        )
    text = str(error.value)
    assert 'alerts.daemons: got ["watcher", "nope"]' in text.replace("'", '"')
    assert "alerts.scrape_timeout: expected at most scrape_interval" in text
    assert "alerts.pager.email_to" in text and "alerts.smtp.smarthost" in text
    assert "alerts.smtp.username: expected together with password_file" in text
    assert "alerts.teams: expected a unique name" in text


@pytest.fixture
def secret_files(tmp_path: Path) -> Path:
    for name in ("prometheus.token", "pd.key", "watcher.token"):
        (tmp_path / name).write_text(f"value-of-{name}\n")
    return tmp_path


def test_scrape_targets_come_from_the_same_config(secret_files: Path) -> None:
    config = from_dict(
        {
            "jupyterhub": {
                "instances": [
                    {"name": "a", "proxy_port": 8001},
                    {"name": "b", "host": "127.0.0.2", "proxy_port": 8011},
                ]
            },
            "nginx": {"listen": "0.0.0.0", "public_port": 8443},
            "watcher": {
                "endpoint": {"port": 9201, "token_file": "watcher.token"},
                "alertmanager_urls": ["http://127.0.0.1:9093", "http://127.0.0.1:9094"],
            },
            "containers": {"endpoint": {"listen": "0.0.0.0"}},
            "alerts": {
                "prometheus_token_file": "prometheus.token",
                "container_nodes": ["node2:9102"],
            },
        },
        base=secret_files,
    )
    rendered = render(config, secret_files / "hubkeeper.toml", secret_files / "out")
    prometheus = yaml.safe_load(rendered.prometheus.read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    hub_targets = [(s["targets"], s["labels"]) for s in jobs["jupyterhub"]["static_configs"]]
    assert hub_targets == [(["127.0.0.1:8001"], {"hub": "a"}), (["127.0.0.2:8011"], {"hub": "b"})]
    token = str(secret_files / "prometheus.token")
    assert jobs["jupyterhub"]["authorization"] == {"credentials_file": token}
    assert jobs["jupyterhub-nginx"]["static_configs"] == [{"targets": ["127.0.0.1:8443"]}]
    assert jobs["jupyterhub-nginx"]["metrics_path"] == "/hub/metrics"
    # only its `up` is kept: the hub job has the same samples with their `hub` label
    assert jobs["jupyterhub-nginx"]["metric_relabel_configs"] == [
        {"source_labels": ["__name__"], "regex": ".+", "action": "drop"}
    ]
    assert jobs["hubkeeper-watcher"]["static_configs"] == [{"targets": ["127.0.0.1:9201"]}]
    assert jobs["hubkeeper-watcher"]["authorization"] == {
        "credentials_file": str(secret_files / "watcher.token")
    }
    assert jobs["hubkeeper-containers"]["static_configs"] == [
        {"targets": ["127.0.0.1:9102", "node2:9102"]}
    ]
    assert {"hubkeeper-shipper", "hubkeeper-culler", "prometheus", "alertmanager"} <= set(jobs)
    managers = prometheus["alerting"]["alertmanagers"]
    assert managers[0]["static_configs"] == [{"targets": ["127.0.0.1:9093", "127.0.0.1:9094"]}]
    assert prometheus["rule_files"] == [str(rendered.out / "rules" / "*.yml")]
    assert len(rendered.rules) == len(list(RULES_DIR.glob("*.yml")))


def test_only_the_listed_daemons_are_scraped(tmp_path: Path) -> None:
    config = from_dict({"alerts": {"daemons": ["watcher"]}})
    rendered = render(config, tmp_path / "hubkeeper.toml", tmp_path / "out")
    jobs = [
        job["job_name"] for job in yaml.safe_load(rendered.prometheus.read_text())["scrape_configs"]
    ]
    assert jobs == [
        "jupyterhub",
        "jupyterhub-nginx",
        "hubkeeper-watcher",
        "prometheus",
        "alertmanager",
    ]


def test_the_hub_token_defaults_to_the_services_folder(tmp_path: Path) -> None:
    (tmp_path / "services").mkdir()
    (tmp_path / "services" / "hubkeeper-prometheus.token").write_text("t\n")
    config = from_dict({"jupyterhub": {"services_token_dir": "services"}}, base=tmp_path)
    rendered = render(config, tmp_path / "hubkeeper.toml", tmp_path / "out")
    job = yaml.safe_load(rendered.prometheus.read_text())["scrape_configs"][0]
    assert job["authorization"]["credentials_file"] == str(
        tmp_path / "services" / "hubkeeper-prometheus.token"
    )
    assert not [w for w in rendered.warnings if "hub token" in w]


def test_nothing_configured_is_warned_about(tmp_path: Path) -> None:
    rendered = render(from_dict({}), tmp_path / "hubkeeper.toml", tmp_path / "out")
    text = " ".join(rendered.warnings)
    assert "critical alerts page nobody" in text and "warnings reach nobody" in text
    assert "watchdog_url" in text and "403" in text


def test_secrets_are_referenced_by_file_and_never_written_into_configs(
    secret_files: Path,
) -> None:
    environ = {"HUBKEEPER_ALERTS_SMTP_PASSWORD": "env-smtp-password"}
    config = from_dict(
        {
            "alerts": {
                "prometheus_token_file": "prometheus.token",
                "smtp": {"username": "alerts"},
                "pager": {"pagerduty_routing_key_file": "pd.key"},
            }
        },
        environ=environ,
        base=secret_files,
    )
    rendered = render(config, secret_files / "hubkeeper.toml", secret_files / "out")
    written = "".join(p.read_text() for p in (rendered.prometheus, rendered.alertmanager))
    assert "value-of-" not in written and "env-smtp-password" not in written
    manager = yaml.safe_load(rendered.alertmanager.read_text())
    pager = next(r for r in manager["receivers"] if r["name"] == "pager")
    assert pager["pagerduty_configs"][0]["routing_key_file"] == str(secret_files / "pd.key")
    smtp_file = Path(manager["global"]["smtp_auth_password_file"])
    assert smtp_file.parent == rendered.out / "secrets"
    assert smtp_file.read_text() == "env-smtp-password"
    assert stat.S_IMODE(smtp_file.stat().st_mode) == 0o600


def test_teams_get_routes_before_the_default_severity_routes(secret_files: Path) -> None:
    config = from_dict(
        {
            "alerts": {
                "prometheus_token_file": "prometheus.token",
                "watchdog_url": "https://hc.example/ping",
                "pager": {"email_to": ["oncall@lab"]},
                "warnings": {"webhook_url": "https://chat.example/hook"},
                "teams": [{"name": "logging", "warnings": {"email_to": ["logs@lab"]}}],
            }
        },
        base=secret_files,
    )
    rendered = render(config, secret_files / "hubkeeper.toml", secret_files / "out")
    route = yaml.safe_load(rendered.alertmanager.read_text())["route"]
    assert route["receiver"] == "warnings" and route["group_by"] == ["alertname", "hub"]
    assert [r["receiver"] for r in route["routes"]] == ["watchdog", "logging-warnings", "pager"]
    assert route["routes"][1]["routes"] == [
        {"receiver": "pager", "matchers": ['severity="critical"']}
    ]
    assert rendered.warnings == []


def test_runbook_urls_follow_the_configured_base(tmp_path: Path) -> None:
    config = from_dict({"alerts": {"runbook_base_url": "https://git.lab/runbooks/"}})
    rendered = render(config, tmp_path / "hubkeeper.toml", tmp_path / "out")
    for path in rendered.rules:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                url = rule["annotations"]["runbook_url"]
                assert url == f"https://git.lab/runbooks/{rule['alert']}.md"


def test_cli_renders_and_exits_2_on_a_bad_config(tmp_path: Path, capsys) -> None:
    good = tmp_path / "hubkeeper.toml"
    good.write_text('[alerts]\nwatchdog_url = "https://hc.example/ping"\n')
    assert main(["alerts", "render", "--config", str(good), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "alertmanager.yml").is_file()
    assert "wrote" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[alerts]\nscrape_interval = -1\n")
    assert main(["alerts", "render", "--config", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "alerts.scrape_interval: got -1" in capsys.readouterr().err


def test_a_time_scale_shortens_every_for_window_age_and_lag_limit_and_no_other_threshold(
    tmp_path: Path,
) -> None:
    """``alerts.rule_time_scale`` (drills, the alert tests): the rules on a faster clock.
    Every time in a rule is one of the four forms scaled (a lag grows with the clock, as
    an age does); nothing else changes (a spawn still takes as long)."""
    config = from_dict({"alerts": {"rule_time_scale": 1 / 60}})
    rendered = render(config, tmp_path / "hubkeeper.toml", tmp_path / "out")
    times = re.compile(
        rf"for: {DURATION}|\[{DURATION}(?::{DURATION})?\]|time\(\) - [^<]+< [\d.]+"
        r"|\w+_lag_seconds > [\d.]+"
    )
    for path in rendered.rules:
        source, scaled = (RULES_DIR / path.name).read_text(), path.read_text()
        originals, shortened = times.findall(source), times.findall(scaled)
        assert len(originals) == len(shortened) > 0
        for before, after in zip(originals, shortened, strict=True):
            numbers = [seconds_of(d) for d in re.findall(DURATION, before)] or [
                float(before.rsplit(" ", 1)[1])
            ]
            now = [seconds_of(d) for d in re.findall(DURATION, after)] or [
                float(after.rsplit(" ", 1)[1])
            ]
            assert now == pytest.approx([n / 60 for n in numbers]), (before, after)
        # the rest (expressions' thresholds, labels, texts) is the source's
        assert times.sub("", source).replace("alerts/runbooks/", "") == times.sub(
            "", scaled
        ).replace('"alerts/runbooks/', "").replace('.md"', ".md")
    shipper = (tmp_path / "out" / "rules" / "shipper.yml").read_text()
    assert "for: 10s" in shipper and "hubkeeper_shipper_lag_seconds > 5\n" in shipper
    assert "\n          ) > 30\n" in (tmp_path / "out" / "rules" / "hubs.yml").read_text()


@pytest.mark.parametrize("scale", [0, -1, 1.5])
def test_a_time_scale_must_shorten(scale: float) -> None:
    with pytest.raises(ConfigError, match="alerts.rule_time_scale"):
        from_dict({"alerts": {"rule_time_scale": scale}})
