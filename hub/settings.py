"""Turn hubkeeper's ``[jupyterhub]`` section into JupyterHub configuration.

Both hub instances (active and standby) apply the same settings: one database, one cookie
secret, one proxy token, the same services and spawner. Only the ports (and, for hubs on two
hosts, the address each binds) differ. User servers reach the hub API through
``hub_connect_url``, NGINX's internal listener, which follows the active hub, so servers
started by one instance keep working under the other.
"""

from __future__ import annotations

import os
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from hubkeeper.config import Config, CullerConfig, JupyterHubConfig

#: Least-privilege scopes per hubkeeper service. A service is registered only when its
#: token file ``<services_token_dir>/<name>.token`` exists.
SERVICE_SCOPES: dict[str, list[str]] = {
    "hubkeeper-watcher": ["read:hub"],
    "hubkeeper-containers": ["list:users", "read:servers"],
    "hubkeeper-culler": [
        "list:users",
        "read:users:activity",
        "read:servers",
        "delete:servers",
    ],
    "hubkeeper-prometheus": ["read:metrics"],
    # The local stack's and the tests' own identity: manages users and groups, reaches servers.
    "hubkeeper-operator": [
        "admin:users",
        "admin:servers",
        "list:users",
        "read:metrics",
        "access:servers",
        "admin:groups",
    ],
}


def proxy_command(config: Config, instance_name: str) -> tuple[list[str], dict[str, str]]:
    """The argv and extra environment of an instance's configurable-http-proxy.

    The proxy runs beside its hub, not as its child (``should_start = False``): it keeps
    routing users to their running servers while its hub is fenced and the standby takes
    over, and a warm standby's proxy is up before its hub is started. The arguments are the
    ones JupyterHub would pass.
    """
    instance = config.jupyterhub.instance(instance_name)
    argv = [
        "configurable-http-proxy",
        f"--ip={instance.host}",
        f"--port={instance.proxy_port}",
        f"--api-ip={instance.host}",
        f"--api-port={instance.proxy_api_port}",
        f"--error-target=http://{instance.host}:{instance.hub_port}/hub/error",
        "--log-level=info",
    ]
    token = config.jupyterhub.proxy_token
    return argv, {"CONFIGPROXY_AUTH_TOKEN": token.reveal()} if token is not None else {}


def database_url(hub: JupyterHubConfig) -> str:
    """The SQLAlchemy URL a hub gives JupyterHub: a PostgreSQL URL on the psycopg 3 driver
    (a plain ``postgresql://`` would mean psycopg2), with the password from
    ``database_password_file`` (JupyterHub redacts it in its log lines)."""
    parts = urllib.parse.urlsplit(hub.database_url)
    if not parts.scheme.startswith("postgresql"):
        return hub.database_url
    netloc = parts.netloc
    if hub.database_password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user}:{urllib.parse.quote(hub.database_password.reveal(), safe='')}@{host}"
    return urllib.parse.urlunsplit(parts._replace(scheme="postgresql+psycopg", netloc=netloc))


def culler_scopes(culler: CullerConfig) -> list[str]:
    """Scopes the culler needs beyond its base ones, for what its [culler] section enables."""
    extra = []
    if culler.report_activity:
        extra.append("users:activity")
    if culler.exempt_groups or any(rule.group for rule in culler.rules):
        extra.append("read:users:groups")
    if culler.cull_users:
        # "created" dates a user who was never active, and gives a user's age
        extra += ["delete:users", "read:users"]
    return extra


def _managed(name: str, config: Config) -> dict[str, Any]:
    """A hub-managed service's command, for the culler when ``[culler] managed_service``."""
    if name != "hubkeeper-culler" or not config.culler.managed_service:
        return {}
    config_path = str(Path(os.environ.get("HUBKEEPER_CONFIG", "hubkeeper.toml")).resolve())
    return {
        "command": [sys.executable, "-m", "hubkeeper.cli", "cull", "--config", config_path],
        "environment": {"HUBKEEPER_CONFIG": config_path},
    }


def service_tokens(token_dir: str | None) -> dict[str, str]:
    if token_dir is None:
        return {}
    tokens = {}
    for name in SERVICE_SCOPES:
        path = Path(token_dir) / f"{name}.token"
        if path.is_file():
            tokens[name] = path.read_text(encoding="utf-8").strip()
    return tokens


def apply(c: Any, config: Config, instance_name: str) -> None:
    """Fill the traitlets config object ``c`` for the named hub instance."""
    hub = config.jupyterhub
    instance = hub.instance(instance_name)
    state_dir = Path(hub.state_dir)

    c.JupyterHub.bind_url = f"http://{instance.host}:{instance.proxy_port}"
    c.JupyterHub.hub_bind_url = f"http://{instance.host}:{instance.hub_port}"
    # Only user servers go through NGINX's internal listener; this hub's own proxy route
    # (JupyterHub.hub_connect_url would change it too) must stay on this instance.
    c.Spawner.hub_connect_url = hub.hub_connect_url
    c.ConfigurableHTTPProxy.api_url = f"http://{instance.host}:{instance.proxy_api_port}"
    c.ConfigurableHTTPProxy.should_start = False  # see proxy_command
    if hub.proxy_token is not None:
        c.ConfigurableHTTPProxy.auth_token = hub.proxy_token.reveal()

    c.JupyterHub.db_url = database_url(hub)
    if hub.database_url.startswith("postgresql"):
        # pg_stat_activity's application_name tells which instance is on the database
        c.JupyterHub.db_kwargs = {
            "connect_args": {"application_name": f"jupyterhub-{instance.name}"}
        }
    c.JupyterHub.pid_file = str(state_dir / f"jupyterhub-{instance.name}.pid")
    if hub.cookie_secret is not None:
        c.JupyterHub.cookie_secret = bytes.fromhex(hub.cookie_secret.reveal())
    # A stopping hub must leave user servers running: the standby adopts them.
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = hub.named_server_limit
    c.JupyterHub.last_activity_interval = hub.last_activity_interval
    c.JupyterHub.init_spawners_timeout = hub.init_spawners_timeout

    c.JupyterHub.authenticator_class = "dummy"
    c.Authenticator.allow_all = True
    c.Authenticator.admin_users = set(hub.admin_users)
    if hub.dummy_password is not None:
        c.DummyAuthenticator.password = hub.dummy_password.reveal()

    c.DockerSpawner.client_kwargs = {"base_url": config.docker.url}
    c.DockerSpawner.image = hub.image
    c.DockerSpawner.allowed_images = list(hub.allowed_images)
    c.DockerSpawner.mem_limit = hub.mem_limit
    c.DockerSpawner.cpu_limit = hub.cpu_limit
    c.DockerSpawner.remove = True  # on stop; not auto_remove, which loses the exit code:
    c.Spawner.start_timeout = int(hub.spawn_timeout)
    c.Spawner.http_timeout = int(hub.spawn_timeout)
    c.Spawner.poll_interval = hub.poll_interval  # how soon a dead server is noticed
    labels = config.labels
    server_labels = {
        labels.user: "{raw_username}",
        labels.server: "{raw_servername}",
        labels.hub: hub.name,
        labels.image: "{raw_image}",
    }
    if hub.spawner == "swarm":
        c.JupyterHub.spawner_class = "hubkeeper.hub.spawner.HostNetworkSwarmSpawner"
        c.DockerSpawner.ip = "0.0.0.0"  # every address of the node the task runs on
        c.HostNetworkSwarmSpawner.labels = server_labels
        c.HostNetworkSwarmSpawner.placement_constraints = list(hub.placement_constraints)
        c.HostNetworkSwarmSpawner.placement_rules = [
            {"group": rule.group, "image": rule.image, "constraints": list(rule.constraints)}
            for rule in hub.placement
        ]
    else:
        c.JupyterHub.spawner_class = "hubkeeper.hub.spawner.HostNetworkDockerSpawner"
        c.DockerSpawner.extra_host_config = {"auto_remove": False}  # a dead one waits
        c.DockerSpawner.ip = hub.server_ip
        c.HostNetworkDockerSpawner.server_address = hub.server_ip
        c.DockerSpawner.extra_create_kwargs = {"labels": server_labels}

    tokens = service_tokens(hub.services_token_dir)
    scopes = {name: list(SERVICE_SCOPES[name]) for name in tokens}
    roles: list[dict[str, Any]] = []
    canary = config.watcher.canary_user
    if config.watcher.canary_interval > 0 and "hubkeeper-watcher" in scopes:
        # the watcher may spawn, read and reach the canary user's server, and no other
        scopes["hubkeeper-watcher"] += [
            f"servers!user={canary}",
            f"read:users!user={canary}",
            f"access:servers!user={canary}",
        ]
        roles.append({"name": "hubkeeper-canary", "scopes": ["self"], "users": [canary]})
    if "hubkeeper-culler" in scopes:
        scopes["hubkeeper-culler"] += culler_scopes(config.culler)
    c.JupyterHub.services = [
        {"name": name, "api_token": token, **_managed(name, config)}
        for name, token in tokens.items()
    ]
    c.JupyterHub.load_roles = roles + [
        {"name": f"{name}-role", "scopes": scopes[name], "services": [name]} for name in tokens
    ]
