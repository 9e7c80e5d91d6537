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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ENV_PREFIX = "HUBKEEPER_"


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Secret:
    """A secret string that never appears in ``repr``, ``str`` or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


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


def port(default: int) -> Any:
    return setting(default, "a TCP port (1-65535)", lambda v: 1 <= v <= 65535)


def _is_byte_size(value: str) -> bool:
    return re.fullmatch(r"\d+(\.\d+)?[KMGT]?", value) is not None


def byte_size(default: str) -> Any:
    return setting(default, 'a size such as "512M" or "2G"', _is_byte_size)


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
    proxy_port: int = port(8001)
    proxy_api_port: int = port(8002)
    hub_port: int = port(8003)


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
    named_server_limit: int = setting(
        5, "a number of named servers per user >= 0", lambda v: v >= 0
    )

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


@dataclass(frozen=True)
class Config:
    hub: HubClientConfig = field(default_factory=HubClientConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    docker: DockerConfig = field(default_factory=DockerConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    jupyterhub: JupyterHubConfig = field(default_factory=JupyterHubConfig)
    nginx: NginxConfig = field(default_factory=NginxConfig)


def _is_url(value: str) -> bool:
    return re.fullmatch(r"https?://[^\s/]+(/\S*)?", value) is not None


def _is_name(value: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", value) is not None


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
        if name not in data and dataclasses.is_dataclass(hints[name]):
            # a section absent from the file still gets its environment secrets
            values[name] = _build(hints[name], {}, _join(path, name), problems, environ, base)
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
