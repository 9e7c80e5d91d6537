"""The alert rules and the generated configs, checked by Prometheus' and Alertmanager's own
tools (Debian packages prometheus and prometheus-alertmanager): promtool, amtool."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hubkeeper.alerts.render import RULES_DIR, Rendered, check, render
from hubkeeper.loader import from_dict

pytestmark = pytest.mark.beside  # runs beside the main lane (tests/run)

TESTS_DIR = RULES_DIR.parent / "tests"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_check_rules_is_clean() -> None:
    result = run("promtool", "check", "rules", *map(str, sorted(RULES_DIR.glob("*.yml"))))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = run("promtool", "test", "rules", *map(str, sorted(TESTS_DIR.glob("*.test.yml"))))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(list(TESTS_DIR.glob("*.test.yml")))


def test_promtool_fails_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests can fail: the same rule, evaluated before its `for:` has passed."""
    broken = yaml.safe_load((TESTS_DIR / "hubs.test.yml").read_text())
    broken["rule_files"] = [str(RULES_DIR / "hubs.yml")]
    case = broken["tests"][1]["alert_rule_test"][0]  # JupyterHubDown at 1m: firing
    case["eval_time"] = "30s"  # down for 30s: still pending, so the expectation is wrong
    (tmp_path / "broken.test.yml").write_text(yaml.safe_dump(broken))
    result = run("promtool", "test", "rules", str(tmp_path / "broken.test.yml"))
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr


def alert_tests() -> dict[str, dict[str, int]]:
    """Per alert name: how many promtool cases expect it firing and how many expect none."""
    counts: dict[str, dict[str, int]] = {}
    for path in TESTS_DIR.glob("*.test.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                kind = "firing" if case.get("exp_alerts") else "silent"
                entry = counts.setdefault(case["alertname"], {"firing": 0, "silent": 0})
                entry[kind] += 1
    return counts


def rule_names() -> set[str]:
    return {
        rule["alert"]
        for path in RULES_DIR.glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    }


@pytest.mark.parametrize("name", sorted(rule_names()))
def test_every_rule_is_unit_tested_firing_and_not_firing(name: str) -> None:
    counts = alert_tests().get(name, {"firing": 0, "silent": 0})
    assert counts["firing"] > 0, f"no promtool case expects {name} to fire"
    if name != "Watchdog":  # always fires, by design
        assert counts["silent"] > 0, f"no promtool case expects {name} not to fire"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    """A config with every kind of destination and two teams, rendered once."""
    folder = tmp_path_factory.mktemp("alerts")
    for name in ("pd.key", "research.key", "slack.url", "hook.token", "smtp.password"):
        (folder / name).write_text(f"{name}-value\n")
    config = from_dict(
        {
            "jupyterhub": {
                "instances": [
                    {"name": "a"},
                    {"name": "b", "proxy_port": 8011, "proxy_api_port": 8012, "hub_port": 8013},
                ]
            },
            "alerts": {
                "runbook_base_url": "https://git.lab.example/hubkeeper/alerts/runbooks",
                "watchdog_url": "https://hc-ping.example/abc",
                "group_interval": 90.5,
                "smtp": {"username": "alerts", "password_file": "smtp.password"},
                "pager": {"pagerduty_routing_key_file": "pd.key", "email_to": ["oncall@lab"]},
                "warnings": {"slack_api_url_file": "slack.url", "slack_channel": "#hub"},
                "teams": [
                    {"name": "logging", "warnings": {"email_to": ["logs@lab"]}},
                    {
                        "name": "research",
                        "pager": {"pagerduty_routing_key_file": "research.key"},
                        "warnings": {
                            "webhook_url": "https://chat.lab.example/hooks/1",
                            "webhook_token_file": "hook.token",
                        },
                    },
                ],
            },
        },
        base=folder,
    )
    return render(config, folder / "hubkeeper.toml", folder / "out")


def test_generated_configs_pass_promtool_and_amtool(rendered: Rendered) -> None:
    assert check(rendered) == []


ROUTES = [
    ({"severity": "critical", "team": "platform", "alertname": "JupyterHubDown"}, "pager"),
    ({"severity": "warning", "team": "platform", "alertname": "JupyterHubSlowSpawns"}, "warnings"),
    ({"severity": "critical", "alertname": "HubkeeperFenceFailed", "hub": "a"}, "pager"),
    ({"severity": "warning", "alertname": "HubkeeperFailover", "hub": "b"}, "warnings"),
    ({"severity": "critical", "team": "logging"}, "pager"),
    ({"severity": "warning", "team": "logging"}, "logging-warnings"),
    ({"severity": "critical", "team": "research"}, "research-pager"),
    ({"severity": "warning", "team": "research"}, "research-warnings"),
    ({"severity": "info", "team": "platform"}, "warnings"),
    ({"severity": "warning", "team": "platform", "alertname": "Watchdog"}, "watchdog"),
]


@pytest.mark.parametrize(("labels", "receiver"), ROUTES)
def test_amtool_routes_each_severity_and_team(
    rendered: Rendered, labels: dict[str, str], receiver: str
) -> None:
    pairs = [f"{key}={value}" for key, value in labels.items()]
    result = run(
        "amtool",
        "config",
        "routes",
        "test",
        f"--config.file={rendered.alertmanager}",
        f"--verify.receivers={receiver}",
        *pairs,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_amtool_route_test_fails_a_wrong_receiver(rendered: Rendered) -> None:
    argv = ["amtool", "config", "routes", "test", f"--config.file={rendered.alertmanager}"]
    result = run(*argv, "--verify.receivers=warnings", "severity=critical", "team=platform")
    assert result.returncode != 0, result.stdout


def test_the_example_config_renders_configs_the_tools_accept(tmp_path: Path) -> None:
    example = RULES_DIR.parents[1] / "deploy" / "hubkeeper.example.toml"
    hubkeeper = str(Path(sys.executable).with_name("hubkeeper"))
    argv = ["alerts", "render", "--config", str(example), "--out", str(tmp_path), "--check"]
    result = run(hubkeeper, *argv)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checks: promtool and amtool ok" in result.stdout
