"""One configuration model for the whole suite.

The schema: frozen dataclasses, each key with its default, its check and its help text.
:mod:`hubkeeper.loader` reads a TOML file and the environment into them.
Secret values are wrapped in :class:`Secret`, whose ``repr`` never shows them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import typing
import urllib.parse
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
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


def setting(
    default: Any, expected: str | None = None, check: Check | None = None, *, help: str = ""
) -> Any:
    """A config key: its default, what a valid value is (with an optional check), and its help
    text, from which the README's configuration reference is generated."""
    meta = {"expected": expected, "check": check, "help": help}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def positive_seconds(default: float, *, help: str) -> Any:
    return setting(default, "a number of seconds > 0", lambda v: v > 0, help=help)


def interval_or_off(*, help: str) -> Any:
    """Seconds between documents a daemon indexes itself; 0 (the default) turns them off."""
    return setting(
        0.0, "a number of seconds: 0 (off) or >= 1", lambda v: v == 0 or v >= 1, help=help
    )


def port(default: int, *, help: str) -> Any:
    return setting(default, "a TCP port (1-65535)", lambda v: 1 <= v <= 65535, help=help)


def _is_byte_size(value: str) -> bool:
    return re.fullmatch(r"\d+(\.\d+)?[KMGT]?", value) is not None


def byte_size(default: str, *, help: str) -> Any:
    return setting(default, 'a size such as "512M" or "2G"', _is_byte_size, help=help)


def parse_byte_size(value: str) -> int:
    """``"512M"`` -> 536870912 (binary multiples, as Docker reads memory limits)."""
    scale = 1024 ** ("KMGT".index(value[-1]) + 1) if value[-1] in "KMGT" else 1
    return int(float(value.rstrip("KMGT")) * scale)


def watcher_command(purpose: str) -> Any:
    """An argv the hub watcher runs for one hub instance."""
    return setting([], help=f"argv run by the watcher to {purpose} (no shell; idempotent)")


def secret_file(description: str) -> Any:
    """A path to a file holding a secret; its value lands in the sibling field without ``_file``."""
    return setting(
        None, f"a path to a file holding {description}", help=f"file holding {description}"
    )


# --- sections --------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointConfig:
    """The HTTP endpoint (``/metrics``, ``/healthz``, PRTG) a daemon serves."""

    listen: str = setting(
        "127.0.0.1", help="address of the daemon's endpoint (`/metrics`, `/healthz`, PRTG routes)"
    )
    port: int = port(
        9100,
        help="its port (0 is refused: Prometheus, PRTG and `hubkeeper status` find the daemon by "
        "it)",
    )
    token_file: str | None = secret_file("the bearer token clients must send")
    token: Secret | None = None
    basic_auth_user: str | None = setting(
        None, help="basic-auth user (with `basic_auth_password_file`; `/healthz` stays open)"
    )
    basic_auth_password_file: str | None = secret_file("the basic-auth password")
    basic_auth_password: Secret | None = None
    # TLS: PEM files read at load time (so check-config finds a missing one)
    tls_cert_file: str | None = secret_file("the endpoint's certificate (PEM, chain after it)")
    tls_cert: Secret | None = None
    tls_key_file: str | None = secret_file("the private key of tls_cert_file (PEM)")
    tls_key: Secret | None = None
    tls_client_ca_file: str | None = secret_file(
        "the CA certificates (PEM) that sign client certificates; set: mutual TLS"
    )
    tls_client_ca: Secret | None = None
    tls_ca_file: str | None = secret_file(
        "the CA (PEM) that Prometheus and hubkeeper status trust for this endpoint"
    )
    tls_ca: Secret | None = None
    tls_client_cert_file: str | None = secret_file(
        "the client certificate (PEM) that Prometheus and hubkeeper status present"
    )
    tls_client_cert: Secret | None = None
    tls_client_key_file: str | None = secret_file("the private key of tls_client_cert_file")
    tls_client_key: Secret | None = None

    def cross_checks(self) -> list[tuple[str, str]]:
        problems = []
        if (self.basic_auth_user is None) != (self.basic_auth_password is None):
            problems.append(("basic_auth_user", "expected together with basic_auth_password_file"))
        needs = {  # a TLS key -> the keys it cannot work without
            "tls_cert": ("tls_key",),
            "tls_key": ("tls_cert",),
            "tls_client_ca": ("tls_cert", "tls_client_cert"),
            "tls_ca": ("tls_cert",),
            "tls_client_cert": ("tls_client_key", "tls_client_ca"),
            "tls_client_key": ("tls_client_cert",),
        }
        for given, required in needs.items():
            if getattr(self, given) is None:
                continue
            problems += [
                (f"{missing}_file", f"expected together with {given}_file")
                for missing in required
                if getattr(self, missing) is None
            ]
        return problems


@dataclass(frozen=True)
class HubClientConfig:
    """How hubkeeper's daemons reach the active hub's REST API (through NGINX)."""

    url: str = setting(
        "http://127.0.0.1:8000",
        "an http(s) URL",
        lambda v: _is_url(v),
        help="the hub as the daemons reach it: NGINX's public address",
    )
    token_file: str | None = secret_file("a JupyterHub API token")
    token: Secret | None = None
    timeout: float = positive_seconds(10.0, help="seconds per request")
    retries: int = setting(
        4,
        "a number of retries >= 0",
        lambda v: v >= 0,
        help="retries on connection errors, timeouts, 429 and 5xx",
    )
    backoff: float = positive_seconds(
        0.5, help="exponential backoff base, seconds, with full jitter"
    )
    backoff_max: float = positive_seconds(10.0, help="exponential backoff cap, seconds")
    page_size: int = setting(
        200,
        "a page size between 1 and 10000",
        lambda v: 1 <= v <= 10000,
        help="`limit` when paging (`offset`/`limit`, pagination media type)",
    )

    def cross_checks(self) -> list[tuple[str, str]]:
        return _at_most(self, "backoff", "backoff_max")


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = setting(
        "info", help="`debug`, `info`, `warning` or `error`"
    )
    #: words added to hubkeeper.redact's secret words, for the daemons' logs and shipped logs
    secret_words: list[str] = setting(
        [],
        "a list of words of letters, digits, '-', '_' and '.'",
        lambda v: all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,63}", w) for w in v),
        help="words added to the secret words of `hubkeeper/redact.py` (values of keys "
        "ending with them, `word=value` in text are masked), in the daemons' logs and in "
        "shipped documents",
    )


@dataclass(frozen=True)
class DockerConfig:
    url: str = setting(
        "unix:///var/run/docker.sock",
        "a Docker engine URL (unix://, tcp://)",
        lambda v: "://" in v,
        help="the Docker engine",
    )


@dataclass(frozen=True)
class LabelsConfig:
    """Names of the labels the hub puts on each user-server container (the exporter reads them)."""

    user: str = setting("org.hubkeeper.user", help="label naming a user server's user")
    server: str = setting(
        "org.hubkeeper.server", help="label naming the server (empty: the default server)"
    )
    hub: str = setting("org.hubkeeper.hub", help="label naming the deployment (`jupyterhub.name`)")
    image: str = setting("org.hubkeeper.image", help="label naming the image the user picked")


def _swarm_constraints(constraints: list[str]) -> bool:
    return all("==" in c or "!=" in c for c in constraints)


@dataclass(frozen=True)
class PlacementRule:
    """More Swarm placement constraints for the servers of a group's members, or of an image."""

    group: str | None = setting(None, help="members of this group (or `image`)")
    image: str | None = setting(None, help="servers of this image (or `group`)")
    constraints: list[str] = setting(
        [],
        "a list of Swarm constraints",
        _swarm_constraints,
        help='added to `placement_constraints` (e.g. "node.labels.gpu==true")',
    )

    def cross_checks(self) -> list[tuple[str, str]]:
        if (self.group is None) == (self.image is None):
            return [("group", "expected exactly one of group and image")]
        return []


@dataclass(frozen=True)
class HubInstance:
    """One JupyterHub process (with its configurable-http-proxy) of the active/standby pair."""

    name: str = setting(
        "a",
        "a short name of letters, digits and dashes",
        lambda v: _is_name(v),
        help="instance name, unique",
    )
    host: str = setting(
        "127.0.0.1",
        help="the instance's address: its hub and proxy bind it (hub, proxy and proxy API "
        "ports) and the watcher probes it there; a hub on another host (or a test's network "
        "namespace) gets that host's address",
    )
    proxy_port: int = port(8001, help="configurable-http-proxy's public port; unique per host")
    proxy_api_port: int = port(8002, help="the proxy's API port; unique per host")
    hub_port: int = port(8003, help="the hub's own port; unique per host")
    start_command: list[str] = watcher_command(
        "start the instance's hub and proxy, signalling a warm hub if one waits"
    )
    stop_command: list[str] = watcher_command(
        "fence the instance: its hub process, the one on the database, not its proxy"
    )
    retire_command: list[str] = watcher_command(
        "stop a fenced instance's proxy once NGINX sends users elsewhere"
    )
    warm_command: list[str] = watcher_command(
        "make a fenced instance a warm standby again: its proxy, and a hub imported but not "
        "on the database"
    )
    agent: str = setting(
        "",
        "an http(s) URL of the `hubkeeper agent` on the instance's host, or empty",
        lambda v: v == "" or _is_url(v),
        help="the agent on the instance's host that runs its commands for the leading watcher "
        "(empty: the watcher runs them itself, on one machine)",
    )


@dataclass(frozen=True)
class JupyterHubConfig:
    """Settings of the standard spawner-backed hub in hub/ (shared by both instances)."""

    name: str = setting(
        "lab",
        "a short name of letters, digits and dashes",
        lambda v: _is_name(v),
        help="deployment name, the `hub` label of its containers",
    )
    instances: list[HubInstance] = setting(
        [HubInstance()],
        help="`[[jupyterhub.instances]]` tables, one per hub instance (active first)",
    )
    database_url: str = setting(
        "sqlite:///jupyterhub.sqlite",
        help="hub database, shared by all instances: `sqlite:///FILE` (the one-machine "
        "default) or `postgresql://USER@HOST:PORT/DATABASE` for hubs on two hosts (driven by "
        "psycopg 3: `postgresql://` is used as `postgresql+psycopg://`, which is accepted too), "
        "its password in `database_password_file`, never in the URL",
    )
    database_password_file: str | None = secret_file(
        "the PostgreSQL user's password (a hub puts it into the URL it gives JupyterHub at "
        "start; it is never on a command line or in a log)"
    )
    database_password: Secret | None = None
    state_dir: str = setting(".", help="pid files")
    cookie_secret_file: str | None = secret_file("the hub's cookie secret (hex)")
    cookie_secret: Secret | None = None
    proxy_token_file: str | None = secret_file("the proxy's auth token")
    proxy_token: Secret | None = None
    hub_connect_url: str = setting(
        "http://127.0.0.1:8081",
        "the stable internal hub API URL (NGINX)",
        lambda v: _is_url(v),
        help="stable internal hub API address (NGINX)",
    )
    image: str = setting("hubkeeper/singleuser:latest", help="default user image")
    allowed_images: list[str] = setting(
        ["hubkeeper/singleuser:latest"],
        "a non-empty list of image names",
        lambda v: len(v) > 0,
        help="images users may pick (`image` spawn option)",
    )
    mem_limit: str = byte_size("1G", help="memory limit per user server")
    cpu_limit: float = setting(
        1.0, "a number of CPUs > 0", lambda v: v > 0, help="CPU limit per user server"
    )
    server_ip: str = setting(
        "127.0.0.1", help="address user servers bind and are reached on (one engine)"
    )
    spawner: Literal["docker", "swarm"] = setting(
        "docker",
        '"docker" or "swarm"',
        lambda v: v in ("docker", "swarm"),
        help='"docker": each server a container of `[docker] url`; "swarm": a service of the '
        "Swarm whose manager `[docker] url` is, its task on any node (host network, reached at "
        "the node's address)",
    )
    placement_constraints: list[str] = setting(
        [],
        "a list of Swarm constraints",
        _swarm_constraints,
        help='Swarm placement constraints of every server (e.g. "node.role==worker")',
    )
    placement: list[PlacementRule] = setting(
        [],
        "a list of tables with group or image",
        help="`[[jupyterhub.placement]]` tables: more constraints per image or group (every "
        "matching rule adds its own)",
    )
    admin_users: list[str] = setting([], help="hub admins")
    dummy_password_file: str | None = secret_file("the shared password of the dummy authenticator")
    dummy_password: Secret | None = None
    services_token_dir: str | None = setting(
        None,
        "a folder holding one token file per hubkeeper service (<service>.token)",
        help="`<service>.token` files of the hubkeeper services",
    )
    spawn_timeout: float = positive_seconds(60.0, help="seconds a spawn may take")
    poll_interval: int = setting(
        30,
        "a whole number of seconds >= 1",
        lambda v: v >= 1,
        help="seconds between the hub's checks that each user server still runs (a dead one is "
        "logged with its exit code)",
    )
    named_server_limit: int = setting(
        5,
        "a number of named servers per user >= 0",
        lambda v: v >= 0,
        help="named servers per user",
    )
    init_spawners_timeout: int = setting(
        1,
        "a whole number of seconds >= 1, or -1 (wait for every check)",
        lambda v: v >= 1 or v == -1,
        help="seconds a starting hub (a failover's standby) waits for its checks of the running "
        "servers before it answers; a server still being checked (one that was starting) "
        "shows as pending until its check ends, then gets its route (JupyterHub's 10 held "
        "failovers up while a server was starting)",
    )
    last_activity_interval: int = setting(
        300,
        "a whole number of seconds >= 1",
        lambda v: v >= 1,
        help="seconds between the hub's reads of its proxy's activity (culling resolution)",
    )

    def cross_checks(self) -> list[tuple[str, str]]:
        names = [instance.name for instance in self.instances]
        if len(set(names)) != len(names):
            return [("instances", f"expected unique instance names, got {names}")]
        database = database_problems(self.database_url, self.database_password is not None)
        if database:
            return database
        taken: dict[tuple[str, int], str] = {}
        for i, instance in enumerate(self.instances):
            for key in ("proxy_port", "proxy_api_port", "hub_port"):
                address = (instance.host, getattr(instance, key))
                if address in taken:
                    at = f"instances[{i}].{key}"
                    return [(at, f"got {address[1]}, expected a port not used by {taken[address]}")]
                taken[address] = f"instances[{i}].{key}"
        return []

    def instance(self, name: str) -> HubInstance:
        for candidate in self.instances:
            if candidate.name == name:
                return candidate
        known = ", ".join(i.name for i in self.instances)
        raise ConfigError([f"jupyterhub.instances: no instance named {name!r} (known: {known})"])


@dataclass(frozen=True)
class NginxConfig:
    """NGINX in front of the hubs: the public listener and the internal hub API listener."""

    binary: str = setting("nginx", help="NGINX binary")
    prefix: str = setting("nginx", help="NGINX's own prefix folder")
    listen: str = setting("127.0.0.1", help="address of both listeners")
    public_port: int = port(8000, help="public listener (the active hub's proxy)")
    internal_port: int = port(8081, help="internal listener (the active hub's API)")
    template: str | None = setting(
        None,
        "a path to an NGINX config template ({{placeholders}})",
        help="template with `{{placeholders}}`",
    )
    agents: list[str] = setting(
        [],
        "a list of http(s) URLs of `hubkeeper agent`s",
        lambda v: all(_is_url(u) for u in v),
        help="the agents of the NGINX hosts that share the floating address; the leading "
        "watcher switches every one (empty: the watcher's own NGINX, on one machine)",
    )

    def cross_checks(self) -> list[tuple[str, str]]:
        if self.public_port == self.internal_port:
            return [("internal_port", "expected a port other than public_port")]
        return []


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_interface_address(value: str) -> bool:
    try:
        ipaddress.ip_interface(value)
    except ValueError:
        return False
    return "/" in value


@dataclass(frozen=True)
class KeepalivedConfig:
    """keepalived on each NGINX host: the floating service address (VRRP, unicast), given up
    by a host whose NGINX stops answering; never taken back by a recovered host."""

    binary: str = setting("keepalived", help="keepalived binary")
    address: str | None = setting(
        None,
        "an address with its prefix length, e.g. 192.0.2.100/24",
        _is_interface_address,
        help="the floating service address users reach NGINX at (CIDR); required to render",
    )
    interface: str = setting("eth0", help="the interface that carries VRRP and the address")
    virtual_router_id: int = setting(
        51,
        "a number from 1 to 255",
        lambda v: 1 <= v <= 255,
        help="VRRP router id, the same on both NGINX hosts, unique on the network segment",
    )
    priority: int = setting(
        100,
        "a number from 1 to 254",
        lambda v: 1 <= v <= 254,
        help="this host's priority: the higher one takes the address when both start together",
    )
    source: str | None = setting(
        None,
        "an IP address",
        lambda v: _is_ip(v),
        help="this host's own address for unicast VRRP (default: the interface's primary one)",
    )
    peers: list[str] = setting(
        [],
        "a list of IP addresses",
        lambda v: all(_is_ip(p) for p in v),
        help="the other NGINX host(s): VRRP goes to them by unicast, never multicast; required",
    )
    advert_interval: float = positive_seconds(
        1.0, help="seconds between VRRP adverts; a holder silent for about 3 of them is replaced"
    )
    check_url: str = setting(
        "http://127.0.0.1:8000/",
        "an http(s) URL",
        lambda v: _is_url(v),
        help="the local NGINX, asked every `check_interval`: any HTTP answer counts (a hub being "
        "down must not move the address); give a local address, not the floating one",
    )
    check_interval: float = positive_seconds(1.0, help="seconds between NGINX checks")
    check_fall: int = setting(
        2,
        "a number >= 1",
        lambda v: v >= 1,
        help="failed checks in a row after which this host gives the address up",
    )
    check_rise: int = setting(
        2,
        "a number >= 1",
        lambda v: v >= 1,
        help="good checks in a row before it may hold it again",
    )

    def cross_checks(self) -> list[tuple[str, str]]:
        if self.source is not None and self.source in self.peers:
            return [("peers", "expected the other hosts' addresses, not this host's source")]
        return []


@dataclass(frozen=True)
class WatcherConfig:
    """The hub watcher: deep probes, rise/fall, failover limits, NGINX switch, alerts."""

    endpoint: EndpointConfig = field(default_factory=lambda: EndpointConfig(port=9101))
    hub_token_file: str | None = secret_file("the hubkeeper-watcher service token")
    hub_token: Secret | None = None
    interval: float = positive_seconds(0.25, help="probe period, seconds")
    probe_timeout: float = positive_seconds(0.5, help="per-check probe timeout, seconds")
    rise: int = setting(
        2, "a number of probes >= 1", lambda v: v >= 1, help="probes in a row to count a hub up"
    )
    fall: int = setting(
        2, "a number of probes >= 1", lambda v: v >= 1, help="probes in a row to count a hub down"
    )
    hang_time: float = setting(
        10.0,
        "a number of seconds >= 0",
        lambda v: v >= 0,
        help="seconds a hub that accepts connections but answers its checks too late must stay "
        "so before it counts down (a hub busy with a burst of spawns blocks its event loop "
        "for seconds; its users' servers do not notice); a hub that refuses connections, or "
        "a failing proxy, counts down after `fall` probes",
    )
    startup_grace: float = setting(
        5.0,
        "a number of seconds >= 0",
        lambda v: v >= 0,
        help="seconds after start without failover",
    )
    hold_time: float = setting(
        300.0, "a number of seconds >= 0", lambda v: v >= 0, help="least seconds between failovers"
    )
    max_failovers_per_hour: int = setting(
        3,
        "a number of failovers >= 1",
        lambda v: v >= 1,
        help="failovers in an hour before the watcher freezes and pages",
    )
    fence_timeout: float = positive_seconds(10.0, help="seconds to fence the old hub")
    start_timeout: float = positive_seconds(
        60.0, help="seconds for the standby to start and pass `rise` probes"
    )
    confirm_timeout: float = positive_seconds(
        5.0, help="seconds to confirm through NGINX that the new generation is served"
    )
    nginx_check_interval: float = positive_seconds(
        15.0,
        help="seconds between checks (`nginx -t`, a process each) that NGINX's live config "
        "file still passes; one that does not (edited by hand) is replaced by the generated "
        "config of the live generation and kept as `nginx.conf.rejected`",
    )
    route_timeout: float = positive_seconds(
        10.0,
        help="most seconds the switch waits for the standby's proxy to hold every user route "
        "the old proxy held (when the old proxy still answers)",
    )
    proxy_drain: float = setting(
        1.0,
        "a number of seconds >= 0",
        lambda v: v >= 0,
        help="seconds between the switch and retiring the old proxy (requests in flight)",
    )
    standby_retry_after: float = positive_seconds(
        600.0, help="seconds a standby that failed to start is skipped"
    )
    state_file: str = setting(
        "watcher-state.json", help="state; `.lock` and `.request` files beside it"
    )
    alertmanager_urls: list[str] = setting(
        [],
        "a list of Alertmanager base URLs",
        lambda v: all(_is_url(u) for u in v),
        help="Alertmanager peers the watcher pushes alerts to",
    )
    alert_resend_interval: float = positive_seconds(
        60.0, help="seconds between re-sends of a firing alert"
    )
    canary_interval: float = setting(
        0.0,
        "a number of seconds between spawn canaries (0: off)",
        lambda v: v >= 0,
        help="seconds between spawn canaries (0: off)",
    )
    canary_user: str = setting("hubkeeper-canary", help="the spawn canary's user")
    canary_timeout: float = positive_seconds(
        120.0, help="the most a canary's start and stop may take, seconds"
    )
    lease_database_url: str = setting(
        "",
        help="`postgresql://USER@HOST:PORT/DATABASE` holding the watchers' lease and shared "
        "state, for watchers on several hosts, its password in `lease_password_file` (empty: a "
        "file lock beside `state_file`, one machine)",
    )
    lease_password_file: str | None = secret_file("the lease database's password")
    lease_password: Secret | None = None
    lease_ttl: float = setting(
        3.0,
        "a number of seconds >= 1",
        lambda v: v >= 1,
        help="seconds a lease lives without renewal (renewed every third of it): the standby "
        "watcher takes over within about this time",
    )
    agent_token_file: str | None = secret_file("the bearer token of the hosts' agents")
    agent_token: Secret | None = None

    def cross_checks(self) -> list[tuple[str, str]]:
        if not self.lease_database_url:
            return []
        has_password = self.lease_password is not None
        return database_problems(
            self.lease_database_url, has_password, "lease_database_url", "lease_password_file",
            "watcher",
        )  # fmt: skip


def _percent(default: float, *, help: str) -> Any:
    return setting(default, "a percentage between 0 and 100", lambda v: 0 <= v <= 100, help=help)


@dataclass(frozen=True)
class ContainersConfig:
    """The container metrics exporter, ``hubkeeper export-containers`` (label names: [labels])."""

    endpoint: EndpointConfig = field(default_factory=lambda: EndpointConfig(port=9102))
    hub_token_file: str | None = secret_file("the hubkeeper-containers service token")
    hub_token: Secret | None = None
    docker_url: str | None = setting(
        None,
        "a Docker engine URL (unix://, tcp://)",
        lambda v: "://" in v,
        help="the engine to watch (default: `docker.url`)",
    )
    node: str | None = setting(
        None,
        "a node name",
        lambda v: bool(v.strip()),
        help="the `node` label of every container series (default: the engine's name, which "
        "is its host's name)",
    )
    source: Literal["auto", "cgroup", "api"] = setting(
        "auto", help="`auto` (cgroup files, else the stats API), `cgroup` or `api`"
    )
    cgroup_root: str = setting("/sys/fs/cgroup", help="where the host's cgroup tree is seen")
    proc_root: str = setting("/proc", help="where the host's processes are seen")
    cache_seconds: float = setting(
        1.0,
        "a number of seconds >= 0",
        lambda v: v >= 0,
        help="scrapes within this share one snapshot (0: every scrape reads)",
    )
    resync_seconds: float = positive_seconds(
        30.0, help="seconds between full container lists (besides the events stream)"
    )
    docker_timeout: float = positive_seconds(10.0, help="Docker API timeout, seconds")
    stats_concurrency: int = setting(
        32,
        "a number of concurrent stats calls (1-256)",
        lambda v: 1 <= v <= 256,
        help="concurrent stats calls (API fallback)",
    )
    reconcile: Literal["full", "orphans", "cluster", "off"] = setting(
        "full",
        help="reconciliation with the hub: `full` (this engine runs every server), `cluster` "
        "(the whole swarm, from the manager this exporter's engine is; one exporter per swarm), "
        "`orphans` (this engine's containers only) or `off`",
    )
    reconcile_seconds: float = positive_seconds(30.0, help="seconds between reconciliations")
    orphan_grace: float = setting(
        60.0,
        "a number of seconds >= 0",
        lambda v: v >= 0,
        help="seconds before a container can be an orphan",
    )
    prtg_top: int = setting(
        5,
        "a number of top users (0-20)",
        lambda v: 0 <= v <= 20,
        help="top users by memory and CPU in the PRTG overview",
    )
    prtg_memory_warning: float = _percent(
        80.0, help="PRTG warning limit, percent of the server's memory limit"
    )
    prtg_memory_error: float = _percent(
        95.0, help="PRTG error limit, percent of the server's memory limit"
    )
    prtg_cpu_warning: float = _percent(
        90.0, help="PRTG warning limit, percent of the server's CPU limit"
    )
    # a document per container and one of the hub's state, through [shipper]'s output
    snapshot_interval: float = interval_or_off(
        help="seconds between snapshot documents (each container's figures, the hub's state) sent "
        "through `[shipper]`'s output"
    )

    def cross_checks(self) -> list[tuple[str, str]]:
        return _at_most(self, "prtg_memory_warning", "prtg_memory_error")


@dataclass(frozen=True)
class CullerRule:
    """Idle timeout and/or max age for the servers of a group's members, or of an image."""

    group: str | None = setting(None, help="members of this group (or `image`)")
    image: str | None = setting(None, help="servers of this image (or `group`)")
    timeout: float | None = setting(
        None, "a number of seconds > 0", lambda v: v > 0, help="their idle timeout, seconds"
    )
    max_age: float | None = setting(
        None,
        "a number of seconds >= 0 (0: no limit)",
        lambda v: v >= 0,
        help="their max age, seconds (0: no limit)",
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
    managed_service: bool = setting(
        False, help="the hub runs `hubkeeper cull` as a managed service"
    )
    dry_run: bool = setting(False, help="log the decisions, change nothing (also `--dry-run`)")
    # jupyterhub-idle-culler's options, same names and meanings
    timeout: float = positive_seconds(600.0, help="idle timeout, seconds")
    cull_every: float | None = setting(
        None,
        "a number of seconds > 0",
        lambda v: v > 0,
        help="seconds between cycles (default: half of `timeout`)",
    )
    max_age: float = setting(
        0.0,
        "a number of seconds >= 0 (0: no limit)",
        lambda v: v >= 0,
        help="stop servers (and delete users) older than this even if active; 0: no limit",
    )
    cull_users: bool = setting(False, help="delete idle users too")
    cull_admin_users: bool = setting(True, help="admins as well")
    cull_default_servers: bool = setting(True, help="cull idle default servers")
    cull_named_servers: bool = setting(True, help="cull idle named servers")
    remove_named_servers: bool = setting(False, help="delete named servers after stopping them")
    concurrency: int = setting(
        10,
        "a number of users at once (1-256)",
        lambda v: 1 <= v <= 256,
        help="users processed at once",
    )
    # hubkeeper's own
    exempt_users: list[str] = setting([], help="users never culled")
    exempt_groups: list[str] = setting([], help="groups whose members are never culled")
    exempt_images: list[str] = setting([], help="images never culled")
    rules: list[CullerRule] = setting(
        [],
        "a list of tables with group or image",
        help="`[[culler.rules]]` tables; first match wins",
    )
    busy_cpu_percent: float = setting(
        10.0,
        "a percentage of one CPU >= 0 (0: no busy protection)",
        lambda v: v >= 0,
        help="keep an idle server whose container used more than this percent of one CPU (0: off)",
    )
    busy_window: float = positive_seconds(600.0, help="CPU averaging window, seconds")
    busy_min_span: float = positive_seconds(5.0, help="least span of samples to judge, seconds")
    busy_unknown: Literal["keep", "cull"] = setting(
        "keep", help="`keep` or `cull` a server whose CPU cannot be read"
    )
    sample_every: float = positive_seconds(30.0, help="CPU sampling period, seconds")
    report_activity: bool = setting(False, help="post busy servers' activity to the hub")
    pending_timeout: float = positive_seconds(
        300.0, help="seconds pending before a server is stuck"
    )
    stop_stuck: bool = setting(False, help="stop stuck spawns")
    orphans: Literal["off", "report", "remove"] = setting(
        "report", help="`off`, `report` or `remove` orphan containers"
    )
    orphan_grace: float = setting(
        600.0,
        "a number of seconds >= 0",
        lambda v: v >= 0,
        help="seconds before a container can be an orphan",
    )
    state_file: str = setting(
        "culler-state.json", help="CPU samples and pending stops; the lock is `<state_file>.lock`"
    )
    storage_watchers: list[str] = setting(
        [],
        "a list of host:port",
        lambda v: all(map(_is_host_port, v)),
        help="storage watchers (`hubkeeper watch-storage`, one per node) asked before each "
        "cycle: servers on a node whose storage is hung are reported, not stopped",
    )

    def cross_checks(self) -> list[tuple[str, str]]:
        return _at_most(self, "busy_min_span", "busy_window")

    @property
    def interval(self) -> float:
        """Seconds between cycles: ``cull_every``, else half the timeout (as the idle culler)."""
        return self.cull_every if self.cull_every is not None else self.timeout / 2


def _is_relative(value: str) -> bool:
    return not value.startswith("/") and ".." not in value.split("/")


@dataclass(frozen=True)
class StorageMount:
    """One notebook filesystem as this node mounts it."""

    name: str = setting(
        "",
        "a short name of letters, digits and dashes",
        lambda v: _is_name(v),
        help="mount name, unique (the `mount` label)",
    )
    path: str = setting(
        "", "an absolute path", lambda v: v.startswith("/"), help="where the filesystem is mounted"
    )
    canary_dir: str = setting(
        ".hubkeeper",
        "a relative path without '..'",
        lambda v: bool(v) and _is_relative(v),
        help="hubkeeper's own folder under `path` for the canary file (created if missing)",
    )
    homes: str | None = setting(
        ".",
        "a relative path without '..'",
        lambda v: _is_relative(v),
        help="folder under `path` whose subfolders are users' homes (usage per user); unset: "
        "no usage scan",
    )

    def cross_checks(self) -> list[tuple[str, str]]:
        if not self.name or not self.path:
            return [("name", "expected a name and a path for every mount")]
        return []


@dataclass(frozen=True)
class StorageNfsServer:
    """An NFS server checked from the network side (ONC RPC over TCP, NFSv3 and MOUNT v3)."""

    name: str = setting(
        "",
        "a short name of letters, digits and dashes",
        lambda v: _is_name(v),
        help="server name, unique (the `server` label)",
    )
    host: str = setting("", help="the NFS server's address")
    export: str = setting(
        "", "an absolute path", lambda v: v.startswith("/"), help="the export whose root is read"
    )
    port: int = setting(
        111,
        "a TCP port (1-65535)",
        lambda v: 1 <= v <= 65535,
        help="the server's portmapper (rpcbind), which names the MOUNT and NFS ports",
    )
    timeout: float = positive_seconds(5.0, help="seconds for the whole check")

    def cross_checks(self) -> list[tuple[str, str]]:
        if not self.name or not self.host or not self.export:
            return [("name", "expected a name, a host and an export for every NFS server")]
        return []


@dataclass(frozen=True)
class StorageOwncloudConfig:
    """Owncloud: its ``status.php`` and a WebDAV PROPFIND of a canary path."""

    url: str | None = setting(
        None,
        "an http(s) URL",
        lambda v: _is_url(v),
        help="Owncloud's base URL (`<url>/status.php`, `<url>/remote.php/dav/files/<user>/`); "
        "unset: not checked",
    )
    user: str | None = setting(None, help="the user whose files the PROPFIND reads")
    app_password_file: str | None = secret_file("the user's Owncloud app password")
    app_password: Secret | None = None
    canary_path: str = setting(
        "", help="path under the user's files that PROPFIND reads (empty: their root)"
    )
    webdav_url: str | None = setting(
        None,
        "an http(s) URL",
        lambda v: _is_url(v),
        help="WebDAV root of the user's files (default: `<url>/remote.php/dav/files/<user>`)",
    )
    ca_file: str | None = setting(None, help="CA bundle for an https Owncloud")
    timeout: float = positive_seconds(10.0, help="seconds per request")

    def cross_checks(self) -> list[tuple[str, str]]:
        if self.url is not None and (self.user is None) != (self.app_password is None):
            return [("user", "expected together with app_password_file")]
        return []


@dataclass(frozen=True)
class StorageConfig:
    """The storage watcher, ``hubkeeper watch-storage``: one per Docker node."""

    endpoint: EndpointConfig = field(default_factory=lambda: EndpointConfig(port=9105))
    node: str | None = setting(None, help="this node's name (default: the host name)")
    mounts: list[StorageMount] = setting(
        [], "a list of tables with name and path", help="`[[storage.mounts]]` tables"
    )
    interval: float = positive_seconds(10.0, help="seconds between probes")
    timeout: float = positive_seconds(
        5.0, help="seconds a mount's probe may take before the mount counts as hung"
    )
    slow: float = positive_seconds(1.0, help="a probe slower than this, seconds, counts as slow")
    scan_budget: float = positive_seconds(
        2.0, help="seconds the usage scan may walk per mount and interval"
    )
    top_users: int = setting(
        10,
        "a number of users (0-40)",
        lambda v: 0 <= v <= 40,
        help="users with the most usage in the metrics and the PRTG sensor",
    )
    nfs: list[StorageNfsServer] = setting(
        [], "a list of tables with name, host and export", help="`[[storage.nfs]]` tables"
    )
    owncloud: StorageOwncloudConfig = field(default_factory=StorageOwncloudConfig)
    snapshot_interval: float = interval_or_off(
        help="seconds between snapshot documents (each mount's state and free space) sent "
        "through `[shipper]`'s output"
    )

    def cross_checks(self) -> list[tuple[str, str]]:
        problems = _at_most(self, "slow", "timeout")
        for key, items in (("mounts", self.mounts), ("nfs", self.nfs)):
            names = [item.name for item in items]
            if len(set(names)) != len(names):
                problems.append((key, f"expected unique names, got {names}"))
        return problems


_PARSER_NAMES = Literal["auto", "jupyterhub", "chp", "nginx_access", "nginx_error", "json", "raw"]


@dataclass(frozen=True)
class ShipperSource:
    """One log source: files by glob (``file``) or user servers' container logs (``docker``)."""

    name: str = setting(
        "",
        "a short name of letters, digits and dashes",
        lambda v: _is_name(v),
        help="source name, unique: `service.name` unless `service` is set",
    )
    type: Literal["file", "docker"] = setting(
        "file", help="`file` (globs) or `docker` (user servers' json-file logs)"
    )
    paths: list[str] = setting(
        [],
        "a list of glob patterns",
        help="globs (required for `file`; `docker` defaults to the engine's containers folder)",
    )
    exclude: list[str] = setting(
        ["*.gz", "*.bz2", "*.xz", "*.zip"], "a list of glob patterns", help="names to skip"
    )
    parser: _PARSER_NAMES = setting(
        "auto", help="`jupyterhub`, `chp`, `nginx_access`, `nginx_error`, `json`, `raw` or `auto`"
    )
    dataset: str | None = setting(
        None,
        "lower-case letters, digits, dots and dashes",
        lambda v: _is_dataset(v),
        help="`event.dataset` (part of the index name); default: the parser's (`container` for "
        "docker)",
    )
    service: str | None = setting(None, help="`service.name`; default: the source name")
    timezone: str = setting(
        "local",
        '"local", "UTC" or an IANA zone',
        lambda v: _is_zone(v),
        help="zone of wall-clock timestamps: `local`, `UTC` or an IANA name",
    )

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
        help="nodes: requests go to one, to the next when it cannot be reached",
    )
    api_key_file: str | None = secret_file("an Elasticsearch API key (base64 id:key)")
    api_key: Secret | None = None
    username: str | None = setting(None, help="basic-auth user (with `password_file`)")
    password_file: str | None = secret_file("the Elasticsearch user's password")
    password: Secret | None = None
    ca_file: str | None = setting(None, help="CA bundle for https nodes")
    index_prefix: str = setting(
        "hubkeeper-logs",
        "lower-case letters, digits and dashes",
        lambda v: _is_dataset(v),
        help="daily indices `<prefix>-<dataset>-YYYY.MM.DD`",
    )
    dead_letter_index: str = setting(
        "hubkeeper-deadletter",
        "lower-case letters, digits and dashes",
        lambda v: _is_dataset(v),
        help="dead letters' daily indices `<dead_letter_index>-YYYY.MM.DD`",
    )
    retention_days: int = setting(
        30,
        "a number of days >= 0 (0 keeps everything)",
        lambda v: v >= 0,
        help="delete daily indices older than this (0 keeps all)",
    )
    shards: int = setting(
        1, "a number of shards >= 1", lambda v: v >= 1, help="index template's shards"
    )
    replicas: int = setting(
        1,
        "a number of replicas >= 0",
        lambda v: v >= 0,
        help="index template's replicas (0 on a single node)",
    )
    timeout: float = positive_seconds(30.0, help="seconds per request")

    def cross_checks(self) -> list[tuple[str, str]]:
        if (self.username is None) != (self.password is None):
            return [("username", "expected together with password_file")]
        if self.api_key is not None and self.username is not None:
            return [("api_key_file", "expected without username and password_file")]
        return []


@dataclass(frozen=True)
class ShipperLogstashConfig:
    """Logstash (or any Beats receiver) over the Lumberjack v2 protocol."""

    hosts: list[str] = setting(
        ["127.0.0.1:5044"],
        "a non-empty list of host:port",
        lambda v: len(v) > 0 and all(re.fullmatch(r"[^\s:]+:\d{1,5}", h) for h in v),
        help="Beats receivers, `host:port`, tried in turn",
    )
    tls: bool = setting(False, help="speak TLS to the receiver")
    ca_file: str | None = setting(None, help="CA bundle that signs the receiver's certificate")
    window_size: int = setting(
        1024,
        "a number of events (1-65536)",
        lambda v: 1 <= v <= 65536,
        help="events per acknowledged window",
    )
    compression_level: int = setting(
        3, "a zlib level (0-9, 0: none)", lambda v: 0 <= v <= 9, help="zlib level (0: none)"
    )
    timeout: float = positive_seconds(30.0, help="seconds without an answer")


@dataclass(frozen=True)
class ShipperConfig:
    """The log shipper, ``hubkeeper ship-logs``: sources, spool, batching, outputs."""

    endpoint: EndpointConfig = field(default_factory=lambda: EndpointConfig(port=9104))
    output: Literal["elasticsearch", "logstash"] = setting(
        "elasticsearch", help="`elasticsearch` or `logstash`"
    )
    state_dir: str = setting(
        "shipper-state", help="registry (`registry.json`), spool segments, lock"
    )
    sources: list[ShipperSource] = setting(
        [ShipperSource(name="containers", type="docker")],
        "a list of sources",
        help="`[[shipper.sources]]` tables",
    )
    host_name: str | None = setting(None, help="`host.name` (default: the machine's host name)")
    spool_max_bytes: str = byte_size("1G", help="spool limit; reading pauses when reached")
    batch_max_events: int = setting(
        1000,
        "a number of events (1-100000)",
        lambda v: 1 <= v <= 100000,
        help="a bulk request is sent at this many events",
    )
    batch_max_bytes: str = setting(
        "5M",
        'a size between "64K" and "50M"',
        lambda v: _is_byte_size(v) and 65536 <= parse_byte_size(v) <= 50 * 1024**2,
        help="... or this size",
    )
    batch_max_wait: float = positive_seconds(1.0, help="... or after this many seconds")
    max_event_bytes: str = byte_size("1M", help="longer events are cut and tagged `truncated`")
    fingerprint_bytes: int = setting(
        1024,
        "a number of bytes (64-65536)",
        lambda v: 64 <= v <= 65536,
        help="first bytes that identify a file",
    )
    poll_interval: float = positive_seconds(0.25, help="seconds between reads when idle")
    scan_interval: float = positive_seconds(2.0, help="seconds between globbing")
    multiline_timeout: float = positive_seconds(
        1.0, help="quiet seconds after which a pending multi-line event is sent"
    )
    close_inactive: float = positive_seconds(
        300.0, help="quiet seconds after which a file that left its glob is closed"
    )
    retry_backoff: float = positive_seconds(
        0.5, help="full-jitter exponential backoff base for retries, seconds"
    )
    retry_backoff_max: float = positive_seconds(30.0, help="its cap, seconds")
    status_interval: float = interval_or_off(
        help="seconds between the shipper's status documents (lag, spool, outcomes)"
    )  # the shipper's lag and outcomes as documents
    documents_buffer: int = setting(
        50_000,
        "a number of documents (1-10000000)",
        lambda v: 1 <= v <= 10_000_000,
        help="snapshot and status documents a daemon keeps while the output does not answer "
        "(50,000: 200 containers every 30 s for two hours); past it the oldest are dropped",
    )
    elasticsearch: ShipperElasticsearchConfig = field(default_factory=ShipperElasticsearchConfig)
    logstash: ShipperLogstashConfig = field(default_factory=ShipperLogstashConfig)

    def cross_checks(self) -> list[tuple[str, str]]:
        names = [source.name for source in self.sources]
        if len(set(names)) != len(names):
            return [("sources", f"expected unique source names, got {names}")]
        return _at_most(self, "retry_backoff", "retry_backoff_max")


@dataclass(frozen=True)
class AlertDestination:
    """Where one kind of notification goes: any of e-mail, PagerDuty, a chat or a plain webhook."""

    email_to: list[str] = setting(
        [], "a list of e-mail addresses", lambda v: all(map(_is_email, v)), help="e-mail addresses"
    )
    pagerduty_routing_key_file: str | None = secret_file("a PagerDuty Events v2 routing key")
    pagerduty_routing_key: Secret | None = None
    pagerduty_url: str = setting(
        "https://events.pagerduty.com/v2/enqueue",
        "an http(s) URL",
        lambda v: _is_url(v),
        help="PagerDuty Events v2 URL",
    )
    slack_api_url_file: str | None = secret_file("a Slack-compatible incoming-webhook URL")
    slack_api_url: Secret | None = None
    slack_channel: str | None = setting(None, help="chat channel")
    webhook_url: str | None = setting(
        None, "an http(s) URL", lambda v: _is_url(v), help="plain webhook"
    )
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

    smarthost: str = setting(
        "127.0.0.1:25", "host:port", lambda v: _is_host_port(v), help="mail server"
    )
    sender: str = setting(
        "hubkeeper@localhost", "an e-mail address", lambda v: _is_email(v), help="`From` address"
    )
    hello: str = setting("localhost", help="name in the SMTP greeting")
    username: str | None = setting(None, help="SMTP user (with `password_file`)")
    password_file: str | None = secret_file("the SMTP password")
    password: Secret | None = None
    require_tls: bool = setting(True, help="refuse a server without STARTTLS")

    def cross_checks(self) -> list[tuple[str, str]]:
        if (self.username is None) != (self.password is None):
            return [("username", "expected together with password_file")]
        return []


@dataclass(frozen=True)
class AlertTeam:
    """Alerts labelled ``team=<name>``: own destinations; empty ones fall back to the defaults."""

    name: str = setting(
        "",
        "a short name of letters, digits and dashes",
        lambda v: _is_name(v),
        help="team name: alerts labelled `team=<name>`",
    )
    pager: AlertDestination = field(default_factory=AlertDestination)
    warnings: AlertDestination = field(default_factory=AlertDestination)


@dataclass(frozen=True)
class AlertsConfig:
    """Prometheus scrape targets and rules, Alertmanager routing (``hubkeeper alerts render``)."""

    runbook_base_url: str = setting(
        "alerts/runbooks",
        "a URL or path",
        lambda v: bool(v.strip()),
        help="base of every `runbook_url` (rules and the watcher's pushed alerts)",
    )
    prometheus_url: str = setting(
        "http://127.0.0.1:9090",
        "an http(s) URL",
        lambda v: _is_url(v),
        help="where Prometheus listens (its self-scrape)",
    )
    prometheus_token_file: str | None = secret_file("the hubkeeper-prometheus service token")
    prometheus_token: Secret | None = None
    scrape_interval: float = positive_seconds(15.0, help="Prometheus scrape interval, seconds")
    scrape_timeout: float = positive_seconds(10.0, help="scrape timeout, seconds")
    evaluation_interval: float = positive_seconds(15.0, help="rule evaluation interval, seconds")
    #: daemons to scrape; absent: every section with an endpoint
    daemons: list[str] | None = setting(
        None,
        "a list of daemon sections with an endpoint",
        lambda v: set(v) <= daemon_sections(),
        help="daemons to scrape (default: every daemon section with an endpoint)",
    )
    container_nodes: list[str] = setting(
        [],
        "a list of host:port",
        lambda v: all(map(_is_host_port, v)),
        help="more container exporters, `host:port` (Swarm nodes)",
    )
    storage_nodes: list[str] = setting(
        [],
        "a list of host:port",
        lambda v: all(map(_is_host_port, v)),
        help="more storage watchers, `host:port` (one per Docker node)",
    )
    group_wait: float = positive_seconds(30.0, help="Alertmanager's group wait, seconds")
    group_interval: float = positive_seconds(300.0, help="Alertmanager's group interval, seconds")
    repeat_interval: float = positive_seconds(
        14400.0, help="Alertmanager's repeat interval, seconds"
    )
    resolve_timeout: float = positive_seconds(300.0, help="Alertmanager's resolve timeout, seconds")
    watchdog_url: str | None = setting(
        None,
        "an http(s) URL",
        lambda v: _is_url(v),
        help="dead-man's switch receiving the Watchdog",
    )
    watchdog_interval: float = positive_seconds(60.0, help="seconds between Watchdog notifications")
    rule_time_scale: float = setting(
        1.0,
        "a number > 0 and <= 1",
        lambda v: 0 < v <= 1,
        help="multiplies every rule's `for:`, range window and age limit (a drill or test stack: "
        "1/60 makes 10m 10s; thresholds stay)",
    )
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    pager: AlertDestination = field(default_factory=AlertDestination)
    warnings: AlertDestination = field(default_factory=AlertDestination)
    teams: list[AlertTeam] = setting(
        [],
        "a list of tables with a name",
        help="`[[alerts.teams]]` tables with `pager`/`warnings` destinations for alerts labelled "
        "`team=<name>`",
    )

    def cross_checks(self) -> list[tuple[str, str]]:
        problems = _at_most(self, "scrape_timeout", "scrape_interval")
        names = [team.name for team in self.teams]
        if "" in names or len(set(names)) != len(names):
            problems.append(("teams", f"expected a unique name for every team, got {names}"))
        return problems


@dataclass(frozen=True)
class AgentConfig:
    """`hubkeeper agent`: on a hub or NGINX host, runs the leading watcher's actions there,
    refusing any whose fencing token is older than one it has seen."""

    endpoint: EndpointConfig = field(default_factory=lambda: EndpointConfig(port=9109))
    hubs: list[str] = setting(
        [],
        "a list of instance names from [[jupyterhub.instances]]",
        help="the hub instances on this host (their commands run here)",
    )
    nginx: bool = setting(False, help="whether this host's NGINX (`[nginx]`) is switched here")
    fencing_file: str = setting(
        "agent-fencing-token", help="where the highest fencing token seen is kept"
    )


@dataclass(frozen=True)
class Config:
    hub: HubClientConfig = field(default_factory=HubClientConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    docker: DockerConfig = field(default_factory=DockerConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    jupyterhub: JupyterHubConfig = field(default_factory=JupyterHubConfig)
    nginx: NginxConfig = field(default_factory=NginxConfig)
    keepalived: KeepalivedConfig = field(default_factory=KeepalivedConfig)
    watcher: WatcherConfig = field(default_factory=WatcherConfig)
    containers: ContainersConfig = field(default_factory=ContainersConfig)
    shipper: ShipperConfig = field(default_factory=ShipperConfig)
    culler: CullerConfig = field(default_factory=CullerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)

    def cross_checks(self) -> list[tuple[str, str]]:
        """What spans sections: agents act only for a watcher holding a lease, and an
        agent's hubs are instances of the deployment."""
        problems = []
        agents = self.nginx.agents or any(hub.agent for hub in self.jupyterhub.instances)
        if agents and not self.watcher.lease_database_url:
            problems.append((
                "watcher.lease_database_url",
                "expected with agents (nginx.agents, jupyterhub.instances[].agent): their "
                "fencing tokens come from the lease",
            ))  # fmt: skip
        if agents and self.watcher.agent_token is None:
            problems.append((
                "watcher.agent_token_file",
                "expected with agents: the watcher's requests to them carry that bearer token",
            ))  # fmt: skip
        acting = self.agent.hubs or self.agent.nginx
        if acting and self.agent.endpoint.listen != "127.0.0.1" and not self.agent.endpoint.token:
            problems.append((
                "agent.endpoint.token_file",
                "expected when the agent listens beyond 127.0.0.1: it starts and stops hubs",
            ))  # fmt: skip
        names = {hub.name for hub in self.jupyterhub.instances}
        unknown = sorted(set(self.agent.hubs) - names)
        if unknown:
            problems.append(
                ("agent.hubs", f"no instances named {unknown} in [[jupyterhub.instances]]")
            )
        return problems


def _at_most(table: Any, key: str, limit: str) -> list[tuple[str, str]]:
    """A cross check: ``key`` must not exceed ``limit`` (e.g. a backoff and its cap)."""
    if getattr(table, key) > getattr(table, limit):
        return [(key, f"expected at most {limit}")]
    return []


DATABASE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")
#: user:password@ as SQLAlchemy's make_url reads it (a password with an unquoted "/" is
#: still one there, where urllib sees none)
_URL_PASSWORD = re.compile(r"[\w+]+://[^:/]*:[^@]*@")


def database_problems(
    url: str,
    has_password: bool,
    url_key: str = "database_url",
    password_key: str = "database_password_file",
    section: str = "jupyterhub",
) -> list[tuple[str, str]]:
    """What is wrong with a database's URL and password (the hubs', or the watchers' lease,
    which must be PostgreSQL); the URL is never echoed (it may hold the password that the
    problem is about)."""
    postgresql = "postgresql://USER@HOST:PORT/DATABASE"
    schemes = DATABASE_SCHEMES if url_key == "database_url" else ("postgresql",)
    expected = f"sqlite:///FILE or {postgresql}" if "sqlite" in schemes else postgresql
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return [(url_key, f"expected a URL ({expected})")]
    if parts.scheme not in schemes:
        return [(url_key, f"got a {parts.scheme or 'schemeless'} URL, expected {expected}")]
    if _URL_PASSWORD.match(url):
        return [
            (
                url_key,
                "has a password in it, which is refused (secrets come from files, never from "
                f"the config): put it in {section}.{password_key}",
            )
        ]
    if has_password and parts.scheme == "sqlite":
        return [(password_key, f"set, but SQLite ({url_key}) takes no password")]
    if has_password and not parts.username:
        return [
            (url_key, f"names no user for the password of {password_key}: expected {postgresql}")
        ]
    return []


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
