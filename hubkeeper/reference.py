"""The README's configuration reference, generated from the schema's help texts.

One row per key: its path, its default and its help text. A table type met a second time
(every daemon's ``endpoint``, the alert destinations) gets one row pointing at the first,
with the defaults that differ. ``hubkeeper config-reference`` prints the table; a unit test
keeps the README's copy equal to it.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Iterator
from typing import Any

from hubkeeper.config import Config
from hubkeeper.loader import env_name, join_path

HEADER = "| key | default | meaning |\n|---|---|---|"


def table(config: Config | None = None) -> str:
    """The Markdown table of every key of ``config`` (default: the defaults)."""
    seen: dict[type, tuple[str, Any]] = {}
    rows = [HEADER]
    rows += [f"| `{key}` | {default} | {meaning} |" for key, default, meaning in
             _rows(config or Config(), "", seen)]  # fmt: skip
    return "\n".join(rows) + "\n"


def _rows(table: Any, path: str, seen: dict[type, tuple[str, Any]]) -> Iterator[tuple[str, ...]]:
    cls = type(table)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for fld in dataclasses.fields(cls):
        key, value, hint = join_path(path, fld.name), getattr(table, fld.name), hints[fld.name]
        if fld.name + "_file" in names:
            continue  # a secret's value: set through its *_file key
        if dataclasses.is_dataclass(hint):
            yield from _table_rows(value, key, seen)
            continue
        meaning = fld.metadata.get("help")
        if not meaning:
            raise ValueError(f"{key}: no help text in the schema")
        secret = fld.name.removesuffix("_file")
        if fld.name.endswith("_file") and secret in names and "[" not in key:
            meaning += f" (env `{env_name(path, secret)}`)"
        yield key, _default(value), meaning
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        if item is not None and dataclasses.is_dataclass(item):
            yield from _table_rows(item(), f"{key}[]", seen)


def _table_rows(
    table: Any, key: str, seen: dict[type, tuple[str, Any]]
) -> Iterator[tuple[str, ...]]:
    """A nested table's keys, or one row pointing at the first table of its type."""
    if type(table) not in seen:
        seen[type(table)] = (key, table)
        yield from _rows(table, key, seen)
        return
    first_key, first = seen[type(table)]
    differing = [
        f"`{f.name} = {_toml(getattr(table, f.name))}`"
        for f in dataclasses.fields(table)
        if getattr(table, f.name) != getattr(first, f.name)
    ]
    yield f"{key}.*", ", ".join(differing) or "—", f"as `{first_key}.*`"


def _default(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
        return ", ".join(f"`{{{_identity(item)}}}`" for item in value)
    return f"`{_toml(value)}`" if not isinstance(value, str) else f"`{value}`"


def _identity(table: Any) -> str:
    """A default table of a list as inline TOML: its name and the keys it changes."""
    defaults = type(table)()
    shown = [
        f"{f.name} = {_toml(getattr(table, f.name))}"
        for f in dataclasses.fields(table)
        if f.name == "name" or getattr(table, f.name) != getattr(defaults, f.name)
    ]
    return ", ".join(shown)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, str | list) else repr(value)
