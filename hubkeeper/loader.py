"""Loading the configuration: TOML file, environment overrides, secrets, conversion.

The schema lives in :mod:`hubkeeper.config`; this module turns data into it. Every problem
is collected (not just the first) and reported as ``key.path: got VALUE, expected WHAT``.
Unknown keys are errors, so a typo never passes silently.

Overrides: ``HUBKEEPER_<SECTION>_<KEY>`` replaces a top-level section's scalar key.
Secrets: a ``*_token_file``/``*_password_file`` style key names a file read at load time;
the matching environment variable (``HUBKEEPER_<TABLE PATH>_<KEY without _file>``, e.g.
``HUBKEEPER_HUB_TOKEN``) wins.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from hubkeeper.config import ENV_PREFIX, Check, Config, ConfigError
from hubkeeper.redact import Secret

#: read outside the config: the config file, the hub instance a hub process is, the download cache
OTHER_VARIABLES = frozenset({"HUBKEEPER_CONFIG", "HUBKEEPER_HUB_INSTANCE", "HUBKEEPER_CACHE_DIR"})


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
            var = env_name(section_field.name, key_field.name)
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


def env_name(table_path: str, key: str) -> str:
    """``("shipper.elasticsearch", "api_key")`` -> ``HUBKEEPER_SHIPPER_ELASTICSEARCH_API_KEY``."""
    return f"{ENV_PREFIX}{table_path}_{key}".replace(".", "_").upper()


def known_variables() -> set[str]:
    """Every ``HUBKEEPER_*`` variable hubkeeper reads: overrides, secrets and the others."""
    known = set(OTHER_VARIABLES)
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        cls = hints[section.name]
        known |= {env_name(section.name, f.name) for f in dataclasses.fields(cls)}
        known |= _secret_variables(cls, section.name)
    return known


def _secret_variables(cls: type, path: str) -> set[str]:
    hints = typing.get_type_hints(cls)
    found = set()
    for fld in dataclasses.fields(cls):
        if _is_secret_value(cls, fld.name):
            found.add(env_name(path, fld.name))
        elif dataclasses.is_dataclass(hints[fld.name]):
            found |= _secret_variables(hints[fld.name], f"{path}.{fld.name}")
    return found


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """``HUBKEEPER_*`` variables hubkeeper does not read (a typo would be silently ignored),
    each with the closest known name, if any is close."""
    known = known_variables()
    suffixes = [name.removeprefix(ENV_PREFIX) for name in known]  # the prefix always matches

    def closest(name: str) -> str | None:
        matches = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), suffixes, n=1)
        return ENV_PREFIX + matches[0] if matches else None

    return [
        (name, closest(name))
        for name in sorted(environ)
        if name.startswith(ENV_PREFIX) and name not in known
    ]


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
            problems.append(f"{join_path(path, key)}: unknown key, expected one of: {known}")
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
                    hints[name],
                    {**default, **table},
                    join_path(path, name),
                    problems,
                    environ,
                    base,
                )
                continue
        if name in data:
            check, expected = fld.metadata.get("check"), fld.metadata.get("expected")
            reported = len(problems)
            value = _convert(
                hints[name], data[name], join_path(path, name), problems, environ, base, expected
            )
            converted = len(problems) == reported
            if converted and check is not None and value is not None and not _passes(check, value):
                problems.append(
                    f"{join_path(path, name)}: got {_show(data[name])}, expected {expected}"
                )
            values[name] = value
        if name.endswith("_file"):
            secret_name = name.removesuffix("_file")
            if secret_name in secret_names:
                values[secret_name] = _read_secret(
                    values.get(name),
                    join_path(path, name),
                    secret_name,
                    path,
                    problems,
                    environ,
                    base,
                )
    try:
        built = cls(**values)
    except TypeError:  # only reachable when a value above was already reported
        return cls()
    for key, message in getattr(built, "cross_checks", lambda: [])():
        problems.append(f"{join_path(path, key)}: {message}")
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
    var = env_name(section_path, secret_name)
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


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
