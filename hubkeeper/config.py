"""One configuration model for the whole suite.

A TOML file is validated into frozen dataclasses. Every problem is collected (not just
the first) and reported as ``key.path: got VALUE, expected WHAT``. Unknown keys are
errors, so a typo never passes silently.

Overrides: ``HUBKEEPER_<SECTION>_<KEY>`` replaces a top-level section's scalar key.
Secrets: a ``*_token_file``/``*_password_file`` style key names a file read at load time;
the matching environment variable (``HUBKEEPER_<TABLE PATH>_<KEY without _file>``, e.g.
``HUBKEEPER_HUB_TOKEN``) wins.
Secret values are wrapped in :class:`Secret`, whose ``repr`` never shows them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hubkeeper.redact import Secret

ENV_PREFIX = "HUBKEEPER_"


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --- field helpers -------------------------------------------------------------------

Check = Callable[[Any], bool]


def setting(default: Any, expected: str | None = None, check: Check | None = None) -> Any:
    """A config key with a default, an optional extra check and its description."""
    meta = {"expected": expected, "check": check}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def positive_seconds(default: float) -> Any:
    return setting(default, "a number of seconds > 0", lambda v: v > 0)


def interval_or_off() -> Any:
    """Seconds between documents a daemon indexes itself; 0 (the default) turns them off."""
    return setting(0.0, "a number of seconds: 0 (off) or >= 1", lambda v: v == 0 or v >= 1)


def port(default: int) -> Any:
    return setting(default, "a TCP port (1-65535)", lambda v: 1 <= v <= 65535)


def _is_byte_size(value: str) -> bool:
    return re.fullmatch(r"\d+(\.\d+)?[KMGT]?", value) is not None


def byte_size(default: str) -> Any:
    return setting(default, 'a size such as "512M" or "2G"', _is_byte_size)


def parse_byte_size(value: str) -> int:
    """``"512M"`` -> 536870912 (binary multiples, as Docker reads memory limits)."""
    scale = 1024 ** ("KMGT".index(value[-1]) + 1) if value[-1] in "KMGT" else 1
    return int(float(value.rstrip("KMGT")) * scale)


def secret_file(description: str) -> Any:
    """A path to a file holding a secret; its value lands in the sibling field without ``_file``."""
    return setting(None, f"a path to a file holding {description}")


# --- sections --------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointConfig:
    """The HTTP endpoint (``/metrics``, ``/healthz``, PRTG) a daemon serves."""

    listen: str = "127.0.0.1"
    port: int = port(9100)
    token_file: str | None = secret_file("the bearer token clients must send")
    token: Secret | None = None
    basic_auth_user: str | None = None
    basic_auth_password_file: str | None = secret_file("the basic-auth password")
    basic_auth_password: Secret | None = None

    def cross_checks(self) -> list[tuple[str, str]]:
        if (self.basic_auth_user is None) != (self.basic_auth_password is None):
            return [("basic_auth_user", "expected together with basic_auth_password_file")]
        return []


@dataclass(frozen=True)
class HubClientConfig:
    """How hubkeeper's daemons reach the active hub's REST API (through NGINX)."""

    url: str = setting("http://127.0.0.1:8000", "an http(s) URL", lambda v: _is_url(v))
    token_file: str | None = secret_file("a JupyterHub API token")
    token: Secret | None = None
    timeout: float = positive_seconds(10.0)
    retries: int = setting(4, "a number of retries >= 0", lambda v: v >= 0)
    backoff: float = positive_seconds(0.5)
    backoff_max: float = positive_seconds(10.0)
    page_size: int = setting(200, "a page size between 1 and 10000", lambda v: 1 <= v <= 10000)


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    #: words added to hubkeeper.redact's secret words, for the daemons' logs and shipped logs
    secret_words: list[str] = setting(
        [],
        "a list of words of letters, digits, '-', '_' and '.'",
        lambda v: all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,63}", w) for w in v),
    )


@dataclass(frozen=True)
class DockerConfig:
    url: str = setting(
        "unix:///var/run/docker.sock", "a Docker engine URL (unix://, tcp://)", lambda v: "://" in v
    )


@dataclass(frozen=True)
class LabelsConfig:
    """Names of the labels the hub puts on each user-server container (the exporter reads them)."""

    user: str = "org.hubkeeper.user"
    server: str = "org.hubkeeper.server"
    hub: str = "org.hubkeeper.hub"
    image: str = "org.hubkeeper.image"


@dataclass(frozen=True)
class HubInstance:
    """One JupyterHub process (with its configurable-http-proxy) of the active/standby pair."""

    name: str = setting("a", "a short name of letters, digits and dashes", lambda v: _is_name(v))
    host: str = "127.0.0.1"
    proxy_port: int = port(8001)
    proxy_api_port: int = port(8002)
    hub_port: int = port(8003)
    #: argv run by the watcher to start / fence this instance (no shell; must be idempotent)
    start_command: list[str] = setting([])
    stop_command: list[str] = setting([])


@dataclass(frozen=True)
class JupyterHubConfig:
    """Settings of the standard spawner-backed hub in hub/ (shared by both instances)."""

    name: str = setting("lab", "a short name of letters, digits and dashes", lambda v: _is_name(v))
    instances: list[HubInstance] = setting([HubInstance()])
    database_url: str = "sqlite:///jupyterhub.sqlite"
    state_dir: str = "."
    cookie_secret_file: str | None = secret_file("the hub's cookie secret (hex)")
    cookie_secret: Secret | None = None
    proxy_token_file: str | None = secret_file("the proxy's auth token")
    proxy_token: Secret | None = None
    hub_connect_url: str = setting(
        "http://127.0.0.1:8081", "the stable internal hub API URL (NGINX)", lambda v: _is_url(v)
    )
    image: str = "hubkeeper/singleuser:latest"
    allowed_images: list[str] = setting(
        ["hubkeeper/singleuser:latest"], "a non-empty list of image names", lambda v: len(v) > 0
    )
    mem_limit: str = byte_size("1G")
    cpu_limit: float = setting(1.0, "a number of CPUs > 0", lambda v: v > 0)
    server_ip: str = "127.0.0.1"
    admin_users: list[str] = setting([])
    dummy_password_file: str | None = secret_file("the shared password of the dummy authenticator")
    dummy_password: Secret | None = None
    services_token_dir: str | None = setting(
        None, "a folder holding one token file per hubkeeper service (<service>.token)"
    )
    spawn_timeout: float = positive_seconds(60.0)
    poll_interval: int = setting(30, "a whole number of seconds >= 1", lambda v: v >= 1)
    named_server_limit: int = setting(
        5, "a number of named servers per user >= 0", lambda v: v >= 0
    )
    last_activity_interval: int = setting(300, "a whole number of seconds >= 1", lambda v: v >= 1)

    def instance(self, name: str) -> HubInstance:
        for candidate in self.instances:
            if candidate.name == name:
                return candidate
        known = ", ".join(i.name for i in self.instances)
        raise ConfigError([f"jupyterhub.instances: no instance named {name!r} (known: {known})"])


@dataclass(frozen=True)
class NginxConfig:
    """NGINX in front of the hubs: the public listener and the internal hub API listener."""

    binary: str = "nginx"
    prefix: str = "nginx"
    listen: str = "127.0.0.1"
    public_port: int = port(8000)
    internal_port: int = port(8081)
    template: str | None = setting(None, "a path to an NGINX config template ({{placeholders}})")


@dataclass(frozen=True)
class WatcherConfig:
    """The hub watcher: deep probes, rise/fall, failover limits, NGINX switch, alerts."""

    endpoint: EndpointConfig = field(default_factory=lambda: EndpointConfig(port=9101))
    hub_token_file: str | None = secret_file("the hubkeeper-watcher service token")
    hub_token: Secret | None = None
    interval: float = positive_seconds(1.0)
    probe_timeout: float = positive_seconds(0.8)
    rise: int = setting(2, "a number of probes >= 1", lambda v: v >= 1)
    fall: int = setting(3, "a number of probes >= 1", lambda v: v >= 1)
    startup_grace: float = setting(5.0, "a number of seconds >= 0", lambda v: v >= 0)
    hold_time: float = setting(300.0, "a number of seconds >= 0", lambda v: v >= 0)
    max_failovers_per_hour: int = setting(3, "a number of failovers >= 1", lambda v: v >= 1)
    fence_timeout: float = positive_seconds(10.0)
    start_timeout: float = positive_seconds(60.0)
    confirm_timeout: float = positive_seconds(5.0)
    standby_retry_after: float = positive_seconds(600.0)
    state_file: str = "watcher-state.json"
    alertmanager_urls: list[str] = setting(
        [], "a list of Alertmanager base URLs", lambda v: all(_is_url(u) for u in v)
    )
    alert_resend_interval: float = positive_seconds(60.0)
    canary_interval: float = setting(
        0.0, "a number of seconds between spawn canaries (0: off)", lambda v: v >= 0
    )
    canary_user: str = "hubkeeper-canary"
    canary_timeout: float = positive_seconds(120.0)


def _percent(default: float) -> Any:
    return setting(default, "a percentage between 0 and 100", lambda v: 0 <= v <= 100)


@dataclass(frozen=True)
class ContainersConfig:
    """The container metrics exporter, ``hubkeeper export-containers`` (label names: [labels])."""

    endpoint: EndpointConfig = field(default_factory=lambda: EndpointConfig(port=9102))
    hub_token_file: str | None = secret_file("the hubkeeper-containers service token")
    hub_token: Secret | None = None
    docker_url: str | None = setting(
        None, "a Docker engine URL (unix://, tcp://)", lambda v: "://" in v
    )
    source: Literal["auto", "cgroup", "api"] = "auto"
    cgroup_root: str = "/sys/fs/cgroup"
    proc_root: str = "/proc"
    cache_seconds: float = setting(1.0, "a number of seconds >= 0", lambda v: v >= 0)
    resync_seconds: float = positive_seconds(30.0)
    docker_timeout: float = positive_seconds(10.0)
    stats_concurrency: int = setting(
        32, "a number of concurrent stats calls (1-256)", lambda v: 1 <= v <= 256
    )
    reconcile: Literal["full", "orphans", "off"] = "full"
    reconcile_seconds: float = positive_seconds(30.0)
    orphan_grace: float = setting(60.0, "a number of seconds >= 0", lambda v: v >= 0)
    prtg_top: int = setting(5, "a number of top users (0-20)", lambda v: 0 <= v <= 20)
    prtg_memory_warning: float = _percent(80.0)
    prtg_memory_error: float = _percent(95.0)
    prtg_cpu_warning: float = _percent(90.0)
    # a document per container and one of the hub's state, through [shipper]'s output
    snapshot_interval: float = interval_or_off()

    def cross_checks(self) -> list[tuple[str, str]]:
        if self.prtg_memory_warning > self.prtg_memory_error:
            return [("prtg_memory_warning", "expected at most prtg_memory_error")]
        return []


@dataclass(frozen=True)
class CullerRule:
    """Idle timeout and/or max age for the servers of a group's members, or of an image."""

    group: str | None = None
    image: str | None = None
    timeout: float | None = setting(None, "a number of seconds > 0", lambda v: v > 0)
    max_age: float | None = setting(
        None, "a number of seconds >= 0 (0: no limit)", lambda v: v >= 0
    )

    def cross_checks(self) -> list[tuple[str, str]]:
        if (self.group is None) == (self.image is None):
            return [("group", "expected exactly one of group and image")]
        if self.timeout is None and self.max_age is None:
            return [("timeout", "expected timeout or max_age (or both)")]
        return []


@dataclass(frozen=True)
class CullerConfig:
    """The idle culler, ``hubkeeper cull``; Docker access comes from [containers]."""

    endpoint: EndpointConfig = field(default_factory=lambda: EndpointConfig(port=9103))
    hub_token_file: str | None = secret_file("the hubkeeper-culler service token")
    hub_token: Secret | None = None
    managed_service: bool = False
    dry_run: bool = False
    # jupyterhub-idle-culler's options, same names and meanings
    timeout: float = positive_seconds(600.0)
    cull_every: float | None = setting(None, "a number of seconds > 0", lambda v: v > 0)
    max_age: float = setting(0.0, "a number of seconds >= 0 (0: no limit)", lambda v: v >= 0)
    cull_users: bool = False
    cull_admin_users: bool = True
    cull_default_servers: bool = True
    cull_named_servers: bool = True
    remove_named_servers: bool = False
    concurrency: int = setting(10, "a number of users at once (1-256)", lambda v: 1 <= v <= 256)
    # hubkeeper's own
    exempt_users: list[str] = setting([])
    exempt_groups: list[str] = setting([])
    exempt_images: list[str] = setting([])
    rules: list[CullerRule] = setting([], "a list of tables with group or image")
    busy_cpu_percent: float = setting(
        10.0, "a percentage of one CPU >= 0 (0: no busy protection)", lambda v: v >= 0
    )
    busy_window: float = positive_seconds(600.0)
    busy_min_span: float = positive_seconds(5.0)
    busy_unknown: Literal["keep", "cull"] = "keep"
    sample_every: float = positive_seconds(30.0)
    report_activity: bool = False
    pending_timeout: float = positive_seconds(300.0)
    stop_stuck: bool = False
    orphans: Literal["off", "report", "remove"] = "report"
    orphan_grace: float = setting(600.0, "a number of seconds >= 0", lambda v: v >= 0)
    state_file: str = "culler-state.json"

    @property
    def interval(self) -> float:
        """Seconds between cycles: ``cull_every``, else half the timeout (as the idle culler)."""
        return self.cull_every if self.cull_every is not None else self.timeout / 2


_PARSER_NAMES = Literal["auto", "jupyterhub", "chp", "nginx_access", "nginx_error", "json", "raw"]


@dataclass(frozen=True)
class ShipperSource:
    """One log source: files by glob (``file``) or user servers' container logs (``docker``)."""

    name: str = setting("", "a short name of letters, digits and dashes", lambda v: _is_name(v))
    type: Literal["file", "docker"] = "file"
    paths: list[str] = setting([], "a list of glob patterns")
    exclude: list[str] = setting(["*.gz", "*.bz2", "*.xz", "*.zip"], "a list of glob patterns")
    parser: _PARSER_NAMES = "auto"
    dataset: str | None = setting(
        None, "lower-case letters, digits, dots and dashes", lambda v: _is_dataset(v)
    )
    service: str | None = None
    timezone: str = setting("local", '"local", "UTC" or an IANA zone', lambda v: _is_zone(v))

    def cross_checks(self) -> list[tuple[str, str]]:
        if not self.name:
            return [("name", "expected a name for every source")]
        if self.type == "file" and not self.paths:
            return [("paths", "expected at least one glob for a file source")]
        return []


@dataclass(frozen=True)
class ShipperElasticsearchConfig:
    """Where the shipper indexes: nodes, credentials, index names, retention."""

    hosts: list[str] = setting(
        ["http://127.0.0.1:9200"],
        "a non-empty list of http(s) URLs",
        lambda v: len(v) > 0 and all(_is_url(u) for u in v),
    )
    api_key_file: str | None = secret_file("an Elasticsearch API key (base64 id:key)")
    api_key: Secret | None = None
    username: str | None = None
    password_file: str | None = secret_file("the Elasticsearch user's password")
    password: Secret | None = None
    ca_file: str | None = None
    index_prefix: str = setting(
        "hubkeeper-logs", "lower-case letters, digits and dashes", lambda v: _is_dataset(v)
    )
    dead_letter_index: str = setting(
        "hubkeeper-deadletter", "lower-case letters, digits and dashes", lambda v: _is_dataset(v)
    )
    retention_days: int = setting(
        30, "a number of days >= 0 (0 keeps everything)", lambda v: v >= 0
    )
    shards: int = setting(1, "a number of shards >= 1", lambda v: v >= 1)
    replicas: int = setting(1, "a number of replicas >= 0", lambda v: v >= 0)
    timeout: float = positive_seconds(30.0)

    def cross_checks(self) -> list[tuple[str, str]]:
        if (self.username is None) != (self.password is None):
            return [("username", "expected together with password_file")]
        return []


@dataclass(frozen=True)
class ShipperLogstashConfig:
    """Logstash (or any Beats receiver) over the Lumberjack v2 protocol."""

    hosts: list[str] = setting(
        ["127.0.0.1:5044"],
        "a non-empty list of host:port",
        lambda v: len(v) > 0 and all(re.fullmatch(r"[^\s:]+:\d{1,5}", h) for h in v),
    )
    tls: bool = False
    ca_file: str | None = None
    window_size: int = setting(1024, "a number of events (1-65536)", lambda v: 1 <= v <= 65536)
    compression_level: int = setting(3, "a zlib level (0-9, 0: none)", lambda v: 0 <= v <= 9)
    timeout: float = positive_seconds(30.0)


@dataclass(frozen=True)
class ShipperConfig:
    """The log shipper, ``hubkeeper ship-logs``: sources, spool, batching, outputs."""

    endpoint: EndpointConfig = field(default_factory=lambda: EndpointConfig(port=9104))
    output: Literal["elasticsearch", "logstash"] = "elasticsearch"
    state_dir: str = "shipper-state"
    sources: list[ShipperSource] = setting(
        [ShipperSource(name="containers", type="docker")], "a list of sources"
    )
    host_name: str | None = None
    spool_max_bytes: str = byte_size("1G")
    batch_max_events: int = setting(
        1000, "a number of events (1-100000)", lambda v: 1 <= v <= 100000
    )
    batch_max_bytes: str = setting(
        "5M",
        'a size between "64K" and "50M"',
        lambda v: _is_byte_size(v) and 65536 <= parse_byte_size(v) <= 50 * 1024**2,
    )
    batch_max_wait: float = positive_seconds(1.0)
    max_event_bytes: str = byte_size("1M")
    fingerprint_bytes: int = setting(
        1024, "a number of bytes (64-65536)", lambda v: 64 <= v <= 65536
    )
    poll_interval: float = positive_seconds(0.25)
    scan_interval: float = positive_seconds(2.0)
    multiline_timeout: float = positive_seconds(1.0)
    close_inactive: float = positive_seconds(300.0)
    retry_backoff: float = positive_seconds(0.5)
    retry_backoff_max: float = positive_seconds(30.0)
    status_interval: float = interval_or_off()  # the shipper's lag and outcomes as documents
    elasticsearch: ShipperElasticsearchConfig = field(default_factory=ShipperElasticsearchConfig)
    logstash: ShipperLogstashConfig = field(default_factory=ShipperLogstashConfig)

    def cross_checks(self) -> list[tuple[str, str]]:
        names = [source.name for source in self.sources]
        if len(set(names)) != len(names):
            return [("sources", f"expected unique source names, got {names}")]
        return []


@dataclass(frozen=True)
class AlertDestination:
    """Where one kind of notification goes: any of e-mail, PagerDuty, a chat or a plain webhook."""

    email_to: list[str] = setting(
        [], "a list of e-mail addresses", lambda v: all(map(_is_email, v))
    )
    pagerduty_routing_key_file: str | None = secret_file("a PagerDuty Events v2 routing key")
    pagerduty_routing_key: Secret | None = None
    pagerduty_url: str = setting(
        "https://events.pagerduty.com/v2/enqueue", "an http(s) URL", lambda v: _is_url(v)
    )
    slack_api_url_file: str | None = secret_file("a Slack-compatible incoming-webhook URL")
    slack_api_url: Secret | None = None
    slack_channel: str | None = None
    webhook_url: str | None = setting(None, "an http(s) URL", lambda v: _is_url(v))
    webhook_token_file: str | None = secret_file("a bearer token the webhook expects")
    webhook_token: Secret | None = None

    @property
    def configured(self) -> bool:
        return bool(
            self.email_to or self.pagerduty_routing_key or self.slack_api_url or self.webhook_url
        )


@dataclass(frozen=True)
class SmtpConfig:
    """The mail server Alertmanager sends e-mail through."""

    smarthost: str = setting("127.0.0.1:25", "host:port", lambda v: _is_host_port(v))
    sender: str = setting("hubkeeper@localhost", "an e-mail address", lambda v: _is_email(v))
    hello: str = "localhost"
    username: str | None = None
    password_file: str | None = secret_file("the SMTP password")
    password: Secret | None = None
    require_tls: bool = True

    def cross_checks(self) -> list[tuple[str, str]]:
        if (self.username is None) != (self.password is None):
            return [("username", "expected together with password_file")]
        return []


@dataclass(frozen=True)
class AlertTeam:
    """Alerts labelled ``team=<name>``: own destinations; empty ones fall back to the defaults."""

    name: str = setting("", "a short name of letters, digits and dashes", lambda v: _is_name(v))
    pager: AlertDestination = field(default_factory=AlertDestination)
    warnings: AlertDestination = field(default_factory=AlertDestination)


@dataclass(frozen=True)
class AlertsConfig:
    """Prometheus scrape targets and rules, Alertmanager routing (``hubkeeper alerts render``)."""

    runbook_base_url: str = setting("alerts/runbooks", "a URL or path", lambda v: bool(v.strip()))
    prometheus_url: str = setting("http://127.0.0.1:9090", "an http(s) URL", lambda v: _is_url(v))
    prometheus_token_file: str | None = secret_file("the hubkeeper-prometheus service token")
    prometheus_token: Secret | None = None
    scrape_interval: float = positive_seconds(15.0)
    scrape_timeout: float = positive_seconds(10.0)
    evaluation_interval: float = positive_seconds(15.0)
    #: daemons to scrape; absent: every section with an endpoint
    daemons: list[str] | None = setting(
        None, "a list of daemon sections with an endpoint", lambda v: set(v) <= daemon_sections()
    )
    container_nodes: list[str] = setting(
        [], "a list of host:port", lambda v: all(map(_is_host_port, v))
    )
    group_wait: float = positive_seconds(30.0)
    group_interval: float = positive_seconds(300.0)
    repeat_interval: float = positive_seconds(14400.0)
    resolve_timeout: float = positive_seconds(300.0)
    watchdog_url: str | None = setting(None, "an http(s) URL", lambda v: _is_url(v))
    watchdog_interval: float = positive_seconds(60.0)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    pager: AlertDestination = field(default_factory=AlertDestination)
    warnings: AlertDestination = field(default_factory=AlertDestination)
    teams: list[AlertTeam] = setting([], "a list of tables with a name")

    def cross_checks(self) -> list[tuple[str, str]]:
        problems = []
        if self.scrape_timeout > self.scrape_interval:
            problems.append(("scrape_timeout", "expected at most scrape_interval"))
        names = [team.name for team in self.teams]
        if "" in names or len(set(names)) != len(names):
            problems.append(("teams", f"expected a unique name for every team, got {names}"))
        return problems


@dataclass(frozen=True)
class Config:
    hub: HubClientConfig = field(default_factory=HubClientConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    docker: DockerConfig = field(default_factory=DockerConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    jupyterhub: JupyterHubConfig = field(default_factory=JupyterHubConfig)
    nginx: NginxConfig = field(default_factory=NginxConfig)
    watcher: WatcherConfig = field(default_factory=WatcherConfig)
    containers: ContainersConfig = field(default_factory=ContainersConfig)
    shipper: ShipperConfig = field(default_factory=ShipperConfig)
    culler: CullerConfig = field(default_factory=CullerConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)


def _is_url(value: str) -> bool:
    return re.fullmatch(r"https?://[^\s/]+(/\S*)?", value) is not None


def _is_email(value: str) -> bool:
    return re.fullmatch(r"[^@\s]+@[^@\s]+", value) is not None


def _is_host_port(value: str) -> bool:
    host, _, number = value.rpartition(":")
    return bool(host) and number.isdigit() and 1 <= int(number) <= 65535


def daemon_sections() -> set[str]:
    """Sections of :class:`Config` whose daemon serves an endpoint (``/metrics``)."""
    hints = typing.get_type_hints(Config)
    return {
        f.name
        for f in dataclasses.fields(Config)
        if dataclasses.is_dataclass(hints[f.name])
        and "endpoint" in {g.name for g in dataclasses.fields(hints[f.name])}
    }


def _is_name(value: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", value) is not None


def _is_dataset(value: str) -> bool:
    return re.fullmatch(r"[a-z0-9][a-z0-9._-]*", value) is not None


def _is_zone(value: str) -> bool:
    if value in ("local", "UTC"):
        return True
    try:
        zoneinfo.ZoneInfo(value)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        return False
    return True


# --- loading ---------------------------------------------------------------------------


def load(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment, validate. Raises :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # the message carries "(at line L, column C)"
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    return from_dict(data, environ=os.environ if environ is None else environ, base=path.parent)


def from_dict(
    data: Mapping[str, Any], environ: Mapping[str, str] | None = None, base: Path = Path(".")
) -> Config:
    environ = {} if environ is None else environ
    problems: list[str] = []
    data = _apply_env_overrides(dict(data), environ, problems)
    config = _build(Config, data, "", problems, environ, base)
    if problems:
        raise ConfigError(problems)
    return config


def _apply_env_overrides(
    data: dict[str, Any], environ: Mapping[str, str], problems: list[str]
) -> dict[str, Any]:
    hints = typing.get_type_hints(Config)
    for section_field in dataclasses.fields(Config):
        section_type = hints[section_field.name]
        section = data.get(section_field.name, {})
        if not isinstance(section, Mapping):
            continue  # reported by _build
        section = dict(section)
        for key_field in dataclasses.fields(section_type):
            var = f"{ENV_PREFIX}{section_field.name}_{key_field.name}".upper()
            if var not in environ:
                continue
            if _is_secret_value(section_type, key_field.name):
                continue  # read in _build, next to its *_file key
            target = typing.get_type_hints(section_type)[key_field.name]
            parsed = _parse_env_value(environ[var], target, var, problems)
            if parsed is not None:
                section[key_field.name] = parsed
        if section:
            data[section_field.name] = section
    return data


def _parse_env_value(raw: str, target: Any, var: str, problems: list[str]) -> Any:
    if str in _members(target) or typing.get_origin(target) is Literal:
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        problems.append(f"{var}: got {_show(raw)}, expected a TOML value for {_type_name(target)}")
        return None


def _is_secret_value(cls: type, name: str) -> bool:
    return name + "_file" in {f.name for f in dataclasses.fields(cls)}


def _build(
    cls: type,
    data: Any,
    path: str,
    problems: list[str],
    environ: Mapping[str, str],
    base: Path,
) -> Any:
    if not isinstance(data, Mapping):
        problems.append(f"{path}: got {_show(data)}, expected a table")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    secret_names = {name for name in fields if _is_secret_value(cls, name)}
    for key in data:
        if key not in fields or key in secret_names:
            known = ", ".join(sorted(set(fields) - secret_names))
            problems.append(f"{_join(path, key)}: unknown key, expected one of: {known}")
    values: dict[str, Any] = {}
    for name, fld in fields.items():
        if name in secret_names:
            continue
        if dataclasses.is_dataclass(hints[name]):
            # a table is built over its default's values: a table absent from the file still
            # gets its environment secrets, and a partial one keeps the other defaults
            table = data.get(name, {})
            if isinstance(table, Mapping):
                default = _as_data(fld.default_factory())  # type: ignore[misc]
                values[name] = _build(
                    hints[name], {**default, **table}, _join(path, name), problems, environ, base
                )
                continue
        if name in data:
            check, expected = fld.metadata.get("check"), fld.metadata.get("expected")
            reported = len(problems)
            value = _convert(
                hints[name], data[name], _join(path, name), problems, environ, base, expected
            )
            converted = len(problems) == reported
            if converted and check is not None and value is not None and not _passes(check, value):
                problems.append(
                    f"{_join(path, name)}: got {_show(data[name])}, expected {expected}"
                )
            values[name] = value
        if name.endswith("_file"):
            secret_name = name.removesuffix("_file")
            if secret_name in secret_names:
                values[secret_name] = _read_secret(
                    values.get(name), _join(path, name), secret_name, path, problems, environ, base
                )
    try:
        built = cls(**values)
    except TypeError:  # only reachable when a value above was already reported
        return cls()
    for key, message in getattr(built, "cross_checks", lambda: [])():
        problems.append(f"{_join(path, key)}: {message}")
    return built


def _as_data(instance: Any) -> Any:
    """A dataclass instance as the TOML data that would build it (secret values left out)."""
    if isinstance(instance, list):
        return [_as_data(item) for item in instance]
    if not dataclasses.is_dataclass(instance):
        return instance
    cls = type(instance)
    return {
        f.name: _as_data(getattr(instance, f.name))
        for f in dataclasses.fields(instance)
        if getattr(instance, f.name) is not None and not _is_secret_value(cls, f.name)
    }


def _passes(check: Check, value: Any) -> bool:
    try:
        return bool(check(value))
    except (TypeError, ValueError):
        return False


def _read_secret(
    file_value: str | None,
    key_path: str,
    secret_name: str,
    section_path: str,
    problems: list[str],
    environ: Mapping[str, str],
    base: Path,
) -> Secret | None:
    var = f"{ENV_PREFIX}{section_path}_{secret_name}".replace(".", "_").upper()
    if "[" not in section_path and environ.get(var):
        return Secret(environ[var])
    if file_value is None:
        return None
    secret_path = base / Path(file_value).expanduser()
    try:
        value = secret_path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        problems.append(
            f"{key_path}: got {_show(file_value)}, expected a readable file ({exc.strerror})"
        )
        return None
    if not value:
        problems.append(f"{key_path}: got {_show(file_value)}, expected a file that is not empty")
        return None
    return Secret(value)


def _convert(
    target: Any,
    value: Any,
    path: str,
    problems: list[str],
    environ: Mapping[str, str],
    base: Path,
    expected: str | None = None,
) -> Any:
    origin = typing.get_origin(target)
    if origin in (types.UnionType, typing.Union):
        members = typing.get_args(target)
        if value is None and type(None) in members:
            return None
        (inner,) = [m for m in members if m is not type(None)]
        return _convert(inner, value, path, problems, environ, base, expected)
    if origin is Literal:
        choices = typing.get_args(target)
        if value not in choices:
            expected = " or ".join(_show(c) for c in choices)
            problems.append(f"{path}: got {_show(value)}, expected {expected}")
        return value
    if origin is list:
        (item_type,) = typing.get_args(target)
        if not isinstance(value, list):
            problems.append(f"{path}: got {_show(value)}, expected a list")
            return []
        return [
            _convert(item_type, item, f"{path}[{i}]", problems, environ, base)
            for i, item in enumerate(value)
        ]
    if dataclasses.is_dataclass(target):
        return _build(target, value, path, problems, environ, base)
    if target is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, target) and not (target is int and isinstance(value, bool)):
        return value
    problems.append(f"{path}: got {_show(value)}, expected {expected or _type_name(target)}")
    return value


def _members(target: Any) -> tuple[Any, ...]:
    if typing.get_origin(target) in (types.UnionType, typing.Union):
        return typing.get_args(target)
    return (target,)


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _type_name(target: Any) -> str:
    return _TYPE_NAMES.get(target, getattr(target, "__name__", str(target)))


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
