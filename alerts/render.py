"""Prometheus and Alertmanager configuration generated from hubkeeper.toml.

One config file describes the hubs, NGINX and every daemon, so the scrape targets, the
alert rules and the routing are written from it and cannot disagree with what runs.
:func:`render` writes into one folder:

- ``prometheus.yml``: both hubs' ``/hub/metrics`` (through each hub's proxy, label
  ``hub``), the hub through NGINX, every hubkeeper daemon's ``/metrics``, Prometheus and
  Alertmanager themselves; the rule files; the Alertmanagers (the watcher's peers).
- ``rules/*.yml``: ``alerts/rules/`` with ``runbook_url`` under ``runbook_base_url``.
- ``alertmanager.yml``: critical -> pager, warning -> warnings, per-team overrides, the
  Watchdog to the dead-man's switch, grouping by alert and hub, inhibition.
- ``templates/hubkeeper.tmpl``: the notification texts.

Secrets stay in their files, which the generated configs reference; a secret that came
from the environment is written to ``secrets/`` (mode 0600). No secret is ever printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from hubkeeper.alertmanager import RUNBOOK_BASE as DEFAULT_RUNBOOK_BASE
from hubkeeper.config import AlertDestination, AlertsConfig, Config, EndpointConfig, Secret
from hubkeeper.config import daemon_sections as known_daemons
from hubkeeper.endpoint import client_host

ALERTS_DIR = Path(__file__).resolve().parent
RULES_DIR = ALERTS_DIR / "rules"
RUNBOOKS_DIR = ALERTS_DIR / "runbooks"
TEMPLATE = ALERTS_DIR / "templates" / "hubkeeper.tmpl"

HUB_JOB, NGINX_JOB = "jupyterhub", "jupyterhub-nginx"
PROMETHEUS_TOKEN = "hubkeeper-prometheus.token"  # in [jupyterhub] services_token_dir

#: Alerts that mean the hub itself is down, and what follows from it (inhibited then).
HUB_DOWN = ("JupyterHubDown", "HubkeeperAllHubsDown")
FOLLOWS_PER_HUB = (
    "JupyterHubSpawnFailureRatio",
    "JupyterHubConsecutiveSpawnFailures",
    "JupyterHubSlowSpawns",
    "JupyterHubEventLoopLagging",
    "HubkeeperSpawnCanaryFailed",
)
FOLLOWS_ANY_HUB = ("JupyterHubUnreachableThroughNginx", "HubkeeperCullerErrors")
#: Notebook storage that does not answer, and the spawn and culling symptoms it causes: not
#: the hub's fault (spawn failures still page: they may have another cause as well).
STORAGE_DOWN = ("HubkeeperStorageHung", "HubkeeperNFSServerDown")
FOLLOWS_STORAGE = (
    "HubkeeperSpawnCanaryFailed",
    "JupyterHubSlowSpawns",
    "HubkeeperStuckPendingServers",
    "HubkeeperCullerErrors",
)
#: A Swarm node that is down leaves its servers without a container: the node pages.
NODE_DOWN = ("HubkeeperSwarmNodeDown",)
FOLLOWS_NODE = ("HubkeeperServersWithoutContainer",)
GROUP_BY = ["alertname", "hub"]
SUBJECT = '{{ template "hubkeeper.subject" . }}'
TEXT = '{{ template "hubkeeper.text" . }}'


@dataclass
class Rendered:
    """What :func:`render` wrote, and what an operator should know about it."""

    out: Path
    prometheus: Path
    alertmanager: Path
    rules: list[Path]
    warnings: list[str] = field(default_factory=list)


def duration(seconds: float) -> str:
    """Seconds as a Prometheus/Alertmanager duration (``4h``, ``1m30s``, ``500ms``)."""
    milliseconds = round(seconds * 1000)
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, milliseconds = divmod(milliseconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


class SecretFiles:
    """Absolute paths of secret files for the generated configs (never their contents)."""

    def __init__(self, base: Path, out: Path) -> None:
        self.base = base
        self.folder = out / "secrets"

    def path(self, file_value: str | None, secret: Secret | None, name: str) -> str | None:
        if file_value is not None:
            return str((self.base / Path(file_value).expanduser()).resolve())
        if secret is None:
            return None
        # from the environment: Prometheus and Alertmanager only read secrets from files
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = self.folder / name
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secret.reveal())
        return str(target)


# --- Prometheus ------------------------------------------------------------------------


def _endpoint_auth(endpoint: EndpointConfig, secrets: SecretFiles, name: str) -> dict[str, Any]:
    if endpoint.token is not None:
        path = secrets.path(endpoint.token_file, endpoint.token, f"{name}-endpoint-token")
        return {"authorization": {"credentials_file": path}}
    if endpoint.basic_auth_user is not None:
        password_file, password = endpoint.basic_auth_password_file, endpoint.basic_auth_password
        path = secrets.path(password_file, password, f"{name}-endpoint-password")
        return {"basic_auth": {"username": endpoint.basic_auth_user, "password_file": path}}
    return {}


def _endpoint_tls(endpoint: EndpointConfig, secrets: SecretFiles, name: str) -> dict[str, Any]:
    """``scheme: https`` and ``tls_config`` (the CA to trust, the client certificate for
    mutual TLS) when the endpoint speaks TLS."""
    if endpoint.tls_cert is None:
        return {}
    files = {
        "ca_file": (endpoint.tls_ca_file, endpoint.tls_ca, f"{name}-endpoint-ca.pem"),
        "cert_file": (
            endpoint.tls_client_cert_file,
            endpoint.tls_client_cert,
            f"{name}-endpoint-client.pem",
        ),
        "key_file": (
            endpoint.tls_client_key_file,
            endpoint.tls_client_key,
            f"{name}-endpoint-client.key",
        ),
    }
    tls = {key: secrets.path(*given) for key, given in files.items()}
    return {"scheme": "https", "tls_config": {k: v for k, v in tls.items() if v is not None}}


def _hub_token(config: Config, secrets: SecretFiles) -> str | None:
    """The ``read:metrics`` token: ``prometheus_token_file``, else the services folder's."""
    alerts = config.alerts
    path = secrets.path(alerts.prometheus_token_file, alerts.prometheus_token, "prometheus-token")
    if path is None and config.jupyterhub.services_token_dir is not None:
        candidate = secrets.base / config.jupyterhub.services_token_dir / PROMETHEUS_TOKEN
        path = str(candidate.resolve()) if candidate.is_file() else None
    return path


def _url_target(url: str) -> tuple[str, str, str]:
    """``http://host:port/prefix`` -> scheme, ``host:port``, path prefix."""
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, f"{parts.hostname}:{parts.port or default}", parts.path.rstrip("/")


def _url_job(name: str, url: str, metrics_path: str = "/metrics") -> dict[str, Any]:
    scheme, target, prefix = _url_target(url)
    return {
        "job_name": name,
        "scheme": scheme,
        "metrics_path": prefix + metrics_path,
        "static_configs": [{"targets": [target]}],
    }


def _alertmanager_job(urls: list[str]) -> dict[str, Any]:
    """Alertmanager's own metrics (the peers share one scheme and path prefix)."""
    job = _url_job("alertmanager", urls[0])
    job["static_configs"] = [{"targets": [_url_target(url)[1] for url in urls]}]
    return job


def alertmanager_urls(config: Config) -> list[str]:
    """The watcher's Alertmanager peers, else Alertmanager's default local address."""
    return list(config.watcher.alertmanager_urls) or ["http://127.0.0.1:9093"]


def daemon_sections(config: Config) -> list[str]:
    chosen = config.alerts.daemons
    return sorted(known_daemons()) if chosen is None else list(chosen)


def prometheus_config(config: Config, secrets: SecretFiles, rules_glob: str) -> dict[str, Any]:
    alerts = config.alerts
    token = _hub_token(config, secrets)
    hub_auth = {"authorization": {"credentials_file": token}} if token else {}
    hubs = {
        "job_name": HUB_JOB,
        "metrics_path": "/hub/metrics",
        **hub_auth,
        "static_configs": [
            {"targets": [f"{hub.host}:{hub.proxy_port}"], "labels": {"hub": hub.name}}
            for hub in config.jupyterhub.instances
        ],
    }
    # `up` of this job: whether the hub answers through NGINX. Its samples, the active hub's
    # (the hub job scrapes them with their `hub` label), are dropped: every hub rule would
    # count them twice, once without a `hub`.
    nginx = {
        "job_name": NGINX_JOB,
        "metrics_path": "/hub/metrics",
        **hub_auth,
        "static_configs": [
            {"targets": [f"{client_host(config.nginx.listen)}:{config.nginx.public_port}"]}
        ],
        "metric_relabel_configs": [
            {"source_labels": ["__name__"], "regex": ".+", "action": "drop"}
        ],
    }
    daemons = []
    for name in daemon_sections(config):
        endpoint: EndpointConfig = getattr(config, name).endpoint
        targets = [f"{client_host(endpoint.listen)}:{endpoint.port}"]
        if name == "containers":
            targets += alerts.container_nodes
        if name == "storage":
            targets += alerts.storage_nodes
        daemons.append(
            {
                "job_name": f"hubkeeper-{name}",
                **_endpoint_tls(endpoint, secrets, name),
                **_endpoint_auth(endpoint, secrets, name),
                "static_configs": [{"targets": targets}],
            }
        )
    managers: dict[tuple[str, str], list[str]] = {}
    for url in alertmanager_urls(config):
        scheme, target, prefix = _url_target(url)
        managers.setdefault((scheme, prefix), []).append(target)
    return {
        "global": {
            "scrape_interval": duration(alerts.scrape_interval),
            "scrape_timeout": duration(alerts.scrape_timeout),
            "evaluation_interval": duration(alerts.evaluation_interval),
        },
        "rule_files": [rules_glob],
        "alerting": {
            "alertmanagers": [
                {"scheme": scheme, "path_prefix": prefix or "/", "static_configs": [{"targets": t}]}
                for (scheme, prefix), t in managers.items()
            ]
        },
        "scrape_configs": [
            hubs,
            nginx,
            *daemons,
            _url_job("prometheus", alerts.prometheus_url),
            _alertmanager_job(alertmanager_urls(config)),
        ],
    }


UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
DURATION = r"(?:\d+(?:ms|[smhdwy]))+"
#: what a rule says about time: ``for: 10m``, a range ``[15m]`` (or subquery ``[1h:1m]``),
#: an age limit ``time() - x_created < 3600`` (the counters born at 1, see culler.yml) and
#: a lag limit ``x_lag_seconds > 300`` (how long the oldest unshipped line has waited: it
#: grows with the clock, as an age does)
FOR = re.compile(rf"^(\s*for: )({DURATION})$", re.MULTILINE)
RANGE = re.compile(rf"\[({DURATION})(?::({DURATION}))?\]")
AGE = re.compile(r"(time\(\) - \w+(?:\{[^}]*\})? < )(\d+(?:\.\d+)?)")
LAG = re.compile(r"(\w+_lag_seconds(?:\{[^}]*\})? > )(\d+(?:\.\d+)?)")


def seconds_of(text: str) -> float:
    """A Prometheus duration (``1h30m``, ``500ms``) in seconds."""
    return sum(
        int(number) * UNIT_SECONDS[unit] for number, unit in re.findall(r"(\d+)(ms|[smhdwy])", text)
    )


def scale_times(text: str, scale: float) -> str:
    """Every ``for:``, range window, age limit and lag limit of a rule file times
    ``scale``, the other thresholds (how long a spawn takes, ratios) unchanged: the same
    rules, on a faster clock (``alerts.rule_time_scale``)."""
    if scale == 1:
        return text

    def scaled(value: str) -> str:
        return duration(seconds_of(value) * scale)

    def window(match: re.Match[str]) -> str:
        step = f":{scaled(match[2])}" if match[2] else ""
        return f"[{scaled(match[1])}{step}]"

    text = FOR.sub(lambda match: match[1] + scaled(match[2]), text)
    text = RANGE.sub(window, text)
    for limit in (AGE, LAG):
        text = limit.sub(lambda match: f"{match[1]}{round(float(match[2]) * scale, 3):g}", text)
    return text


def render_rules(base_url: str, out: Path, time_scale: float = 1.0) -> list[Path]:
    """Copy the rule files, pointing ``runbook_url`` at ``base_url``, with every time in
    them scaled by ``time_scale`` (:func:`scale_times`)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sorted(RULES_DIR.glob("*.yml")):
        text = re.sub(
            rf"runbook_url: {re.escape(DEFAULT_RUNBOOK_BASE)}/(\S+)",
            lambda match: "runbook_url: " + json.dumps(f"{base_url.rstrip('/')}/{match[1]}"),
            scale_times(source.read_text(encoding="utf-8"), time_scale),
        )
        target = out / source.name
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


# --- Alertmanager ----------------------------------------------------------------------


def _receiver(name: str, dest: AlertDestination, secrets: SecretFiles) -> dict[str, Any]:
    receiver: dict[str, Any] = {"name": name}
    if dest.email_to:
        receiver["email_configs"] = [
            {
                "to": ", ".join(dest.email_to),
                "send_resolved": True,
                "headers": {"Subject": SUBJECT},
                "text": TEXT,
                "html": "",
            }
        ]
    if dest.pagerduty_routing_key is not None:
        key = secrets.path(
            dest.pagerduty_routing_key_file, dest.pagerduty_routing_key, f"{name}-pagerduty-key"
        )
        receiver["pagerduty_configs"] = [
            {
                "routing_key_file": key,
                "url": dest.pagerduty_url,
                "send_resolved": True,
                "severity": '{{ if eq .CommonLabels.severity "critical" }}critical'
                "{{ else }}warning{{ end }}",
                "description": SUBJECT,
                "class": "{{ .CommonLabels.alertname }}",
                "component": "{{ .CommonLabels.hub }}",
                "group": "{{ .CommonLabels.team }}",
                "details": {
                    "summary": '{{ template "hubkeeper.summaries" . }}',
                    "description": '{{ template "hubkeeper.descriptions" . }}',
                    "runbook_url": '{{ template "hubkeeper.runbook" . }}',
                },
                "links": [{"href": '{{ template "hubkeeper.runbook" . }}', "text": "Runbook"}],
            }
        ]
    if dest.slack_api_url is not None:
        url = secrets.path(dest.slack_api_url_file, dest.slack_api_url, f"{name}-slack-url")
        slack = {"api_url_file": url, "send_resolved": True, "title": SUBJECT, "text": TEXT}
        if dest.slack_channel:
            slack["channel"] = dest.slack_channel
        receiver["slack_configs"] = [slack]
    if dest.webhook_url is not None:
        webhook: dict[str, Any] = {"url": dest.webhook_url, "send_resolved": True}
        token = secrets.path(dest.webhook_token_file, dest.webhook_token, f"{name}-webhook-token")
        if token is not None:
            webhook["http_config"] = {"authorization": {"credentials_file": token}}
        receiver["webhook_configs"] = [webhook]
    return receiver


def _regex(names: tuple[str, ...]) -> str:
    return f'alertname=~"{"|".join(names)}"'


def inhibit_rules() -> list[dict[str, Any]]:
    return [
        # a hub that is down explains its spawn failures and lag (same hub) ...
        {
            "source_matchers": [_regex(HUB_DOWN)],
            "target_matchers": [_regex(FOLLOWS_PER_HUB)],
            "equal": ["hub"],
        },
        # ... and NGINX answering nothing, and the culler failing to reach it
        {"source_matchers": [_regex(HUB_DOWN)], "target_matchers": [_regex(FOLLOWS_ANY_HUB)]},
        # a hung notebook mount makes spawns hang and stops fail: storage pages, not the hub
        {"source_matchers": [_regex(STORAGE_DOWN)], "target_matchers": [_regex(FOLLOWS_STORAGE)]},
        {"source_matchers": [_regex(NODE_DOWN)], "target_matchers": [_regex(FOLLOWS_NODE)]},
        {
            "source_matchers": ['alertname="JupyterHubConsecutiveSpawnFailures"'],
            "target_matchers": ['alertname="JupyterHubSpawnFailureRatio"'],
            "equal": ["hub"],
        },
        # the critical form of an alert silences its warning form for the same thing
        {
            "source_matchers": ['severity="critical"'],
            "target_matchers": ['severity="warning"'],
            "equal": ["alertname", "hub", "instance", "name"],
        },
    ]


def alertmanager_config(
    alerts: AlertsConfig, secrets: SecretFiles, template: Path
) -> tuple[dict[str, Any], list[str]]:
    """The config and warnings about alerts that would reach nobody."""
    warnings = []
    smtp = alerts.smtp
    settings: dict[str, Any] = {
        "resolve_timeout": duration(alerts.resolve_timeout),
        "smtp_smarthost": smtp.smarthost,
        "smtp_from": smtp.sender,
        "smtp_hello": smtp.hello,
        "smtp_require_tls": smtp.require_tls,
    }
    if smtp.username is not None:
        settings["smtp_auth_username"] = smtp.username
        settings["smtp_auth_password_file"] = secrets.path(
            smtp.password_file, smtp.password, "smtp-password"
        )
    if not alerts.pager.configured:
        warnings.append("alerts.pager has no destination: critical alerts page nobody")
    if not alerts.warnings.configured:
        warnings.append("alerts.warnings has no destination: warnings reach nobody")
    receivers = [
        _receiver("pager", alerts.pager, secrets),
        _receiver("warnings", alerts.warnings, secrets),
        {"name": "watchdog"},
    ]
    if alerts.group_wait < alerts.scrape_interval + alerts.evaluation_interval:
        warnings.append(
            "alerts.group_wait is shorter than scrape_interval + evaluation_interval: "
            "an alert may be notified before the one that inhibits it arrives"
        )
    if alerts.watchdog_url is not None:
        receivers[-1]["webhook_configs"] = [{"url": alerts.watchdog_url, "send_resolved": False}]
    else:
        warnings.append("alerts.watchdog_url is not set: nobody notices when alerting stops")
    routes: list[dict[str, Any]] = [
        {
            "receiver": "watchdog",
            "matchers": ['alertname="Watchdog"'],
            "group_wait": "0s",
            "group_interval": duration(alerts.watchdog_interval),
            "repeat_interval": duration(alerts.watchdog_interval),
        }
    ]
    for team in alerts.teams:
        pager, warn = "pager", "warnings"
        if team.pager.configured:
            pager = f"{team.name}-pager"
            receivers.append(_receiver(pager, team.pager, secrets))
        if team.warnings.configured:
            warn = f"{team.name}-warnings"
            receivers.append(_receiver(warn, team.warnings, secrets))
        routes.append(
            {
                "receiver": warn,
                "matchers": [f'team="{team.name}"'],
                "routes": [{"receiver": pager, "matchers": ['severity="critical"']}],
            }
        )
    routes.append({"receiver": "pager", "matchers": ['severity="critical"']})
    config = {
        "global": settings,
        "templates": [str(template)],
        "route": {
            "receiver": "warnings",
            "group_by": GROUP_BY,
            "group_wait": duration(alerts.group_wait),
            "group_interval": duration(alerts.group_interval),
            "repeat_interval": duration(alerts.repeat_interval),
            "routes": routes,
        },
        "inhibit_rules": inhibit_rules(),
        "receivers": receivers,
    }
    return config, warnings


# --- writing and checking --------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Plain YAML without anchors: shared settings are repeated, as people write them."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _write_yaml(path: Path, data: dict[str, Any], header: str) -> Path:
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(f"# {header}\n{text}", encoding="utf-8")
    temporary.replace(path)  # readers never see half a file
    return path


def render(config: Config, config_path: Path, out: Path) -> Rendered:
    """Write every generated file into ``out`` (created if missing)."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    secrets = SecretFiles(config_path.resolve().parent, out)
    header = f"Generated by `hubkeeper alerts render` from {config_path.resolve()}; do not edit."
    alerts = config.alerts
    rules = render_rules(alerts.runbook_base_url, out / "rules", alerts.rule_time_scale)
    template = out / "templates" / TEMPLATE.name
    template.parent.mkdir(exist_ok=True)
    shutil.copyfile(TEMPLATE, template)
    prometheus = _write_yaml(
        out / "prometheus.yml",
        prometheus_config(config, secrets, str(out / "rules" / "*.yml")),
        header,
    )
    manager, warnings = alertmanager_config(config.alerts, secrets, template)
    alertmanager = _write_yaml(out / "alertmanager.yml", manager, header)
    if _hub_token(config, secrets) is None:
        warnings.append(
            "no hub token for Prometheus (alerts.prometheus_token_file, or "
            f"{PROMETHEUS_TOKEN} in jupyterhub.services_token_dir): /hub/metrics answers 403"
        )
    return Rendered(out, prometheus, alertmanager, rules, warnings)


def check(rendered: Rendered) -> list[str]:
    """``promtool check config`` (rules included) and ``amtool check-config``; problems."""
    problems = []
    for argv in (
        ["promtool", "check", "config", str(rendered.prometheus)],
        ["amtool", "check-config", str(rendered.alertmanager)],
    ):
        if shutil.which(argv[0]) is None:
            problems.append(f"{argv[0]} not found (Debian packages prometheus, alertmanager)")
            continue
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            problems.append(f"{' '.join(argv)}:\n{result.stdout}{result.stderr}".rstrip())
    return problems


def render_command(config: Config, args: argparse.Namespace) -> int:
    """``hubkeeper alerts render --config FILE --out DIR [--check]``."""
    rendered = render(config, Path(args.config), Path(args.out))
    for path in (rendered.prometheus, *rendered.rules, rendered.alertmanager):
        print(f"wrote {path}")
    for warning in rendered.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not args.check:
        return 0
    problems = check(rendered)
    for problem in problems:
        print(problem, file=sys.stderr)
    print("checks: " + ("failed" if problems else "promtool and amtool ok"))
    return 1 if problems else 0
