"""PRTG "HTTP Data Advanced" sensor payloads, and a strict checker of that format.

A sensor answers ``{"prtg": {"result": [channel, ...], "text": ...}}``; a failure is
``{"prtg": {"error": 1, "text": ...}}``, always with HTTP 200 (PRTG treats other statuses
as a transport problem and shows no text). Rules from PRTG's custom-sensor manual: at most
50 channels, unique channel names, units from PRTG's list, ``float: 1`` for non-integer
values, a text of at most 2000 characters without ``#``. Limits (``limitmode`` and
``limit*``) only take effect when PRTG first creates a channel.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

MAX_CHANNELS = 50
MAX_TEXT = 2000
CONTENT_TYPE = "application/json; charset=utf-8"

UNITS = frozenset(
    {
        "BytesBandwidth",
        "BytesDisk",
        "BytesFile",
        "BytesMemory",
        "Count",
        "CPU",
        "Custom",
        "Percent",
        "SpeedDisk",
        "SpeedNet",
        "Temperature",
        "TimeHours",
        "TimeResponse",
        "TimeSeconds",
    }
)
SIZES = frozenset(
    {
        "One",
        "Kilo",
        "Mega",
        "Giga",
        "Tera",
        "Byte",
        "KiloByte",
        "MegaByte",
        "GigaByte",
        "TeraByte",
        "Bit",
        "KiloBit",
        "MegaBit",
        "GigaBit",
        "TeraBit",
    }
)
SPEED_TIMES = frozenset({"Second", "Minute", "Hour", "Day"})
_CHOICES: dict[str, frozenset[Any]] = {
    "unit": UNITS,
    "volumesize": SIZES,
    "speedsize": SIZES,
    "speedtime": SPEED_TIMES,
    "mode": frozenset({"Absolute", "Difference"}),
    "decimalmode": frozenset({"Auto", "All"}),
}
_FLAGS = frozenset({"float", "warning", "showchart", "showtable", "limitmode", "notifychanged"})
_LIMITS = frozenset({"limitmaxerror", "limitmaxwarning", "limitminwarning", "limitminerror"})
_STRINGS = frozenset({"channel", "customunit", "valuelookup", "limiterrormsg", "limitwarningmsg"})
CHANNEL_KEYS = frozenset({"value"}) | set(_CHOICES) | _FLAGS | _LIMITS | _STRINGS

Payload = dict[str, Any]


@dataclass(frozen=True)
class Limits:
    """Channel limits; PRTG applies them only when it first creates the channel."""

    max_error: float | None = None
    max_warning: float | None = None
    min_warning: float | None = None
    min_error: float | None = None
    error_msg: str | None = None
    warning_msg: str | None = None


def channel(
    name: str,
    value: int | float,
    unit: str = "Count",
    *,
    custom_unit: str | None = None,
    volume_size: str | None = None,
    speed_size: str | None = None,
    speed_time: str | None = None,
    mode: Literal["Absolute", "Difference"] | None = None,
    decimals: int = 2,
    limits: Limits | None = None,
) -> dict[str, Any]:
    """One channel. A ``float`` value makes a float channel (rounded to ``decimals``)."""
    result: dict[str, Any] = {"channel": name, "unit": unit}
    if isinstance(value, float):
        result["value"] = round(value, decimals) if math.isfinite(value) else 0.0
        result["float"] = 1
        result["decimalmode"] = "All"
    else:
        result["value"] = int(value)
    optional = {
        "customunit": custom_unit,
        "volumesize": volume_size,
        "speedsize": speed_size,
        "speedtime": speed_time,
        "mode": mode,
    }
    result.update({key: item for key, item in optional.items() if item is not None})
    if limits is not None:
        bounds = {
            "limitmaxerror": limits.max_error,
            "limitmaxwarning": limits.max_warning,
            "limitminwarning": limits.min_warning,
            "limitminerror": limits.min_error,
            "limiterrormsg": limits.error_msg,
            "limitwarningmsg": limits.warning_msg,
        }
        result.update({key: item for key, item in bounds.items() if item is not None})
        result["limitmode"] = 1
    return result


def clean_text(text: str) -> str:
    """Sensor text PRTG accepts: no ``#`` or control characters, at most 2000 characters."""
    text = "".join(" " if ord(c) < 32 or c == "\x7f" else c for c in text).replace("#", "no.")
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 3] + "..."
    return text


def sensor(channels: Iterable[Mapping[str, Any]], text: str) -> Payload:
    """A result payload; raises ValueError for more than 50 channels or a repeated name."""
    result = [dict(c) for c in channels]
    if len(result) > MAX_CHANNELS:
        raise ValueError(f"{len(result)} channels, PRTG allows at most {MAX_CHANNELS}")
    names = [c["channel"] for c in result]
    if len(set(names)) != len(names):
        raise ValueError(f"channel names repeat: {names}")
    return {"prtg": {"result": result, "text": clean_text(text)}}


def error(text: str) -> Payload:
    """PRTG's error form: the sensor turns red and shows ``text``."""
    return {"prtg": {"error": 1, "text": clean_text(text) or "error"}}


def response(payload: Payload) -> tuple[int, str, bytes]:
    """An endpoint response: PRTG payloads, errors included, always go out with HTTP 200."""
    return 200, CONTENT_TYPE, json.dumps(payload, ensure_ascii=False).encode("utf-8")


# --- strict checker ----------------------------------------------------------------------


def check(payload: Any) -> list[str]:
    """Every way ``payload`` departs from PRTG's documented format (empty when valid)."""
    if not isinstance(payload, dict) or set(payload) != {"prtg"}:
        return ['top level: expected exactly one key, "prtg"']
    body = payload["prtg"]
    if not isinstance(body, dict):
        return ["prtg: expected an object"]
    problems = [
        f"prtg.{key}: unknown key" for key in body if key not in {"result", "text", "error"}
    ]
    if "text" in body:
        problems += _check_text(body["text"])
    if "error" in body:
        if body["error"] != 1 or isinstance(body["error"], bool):
            problems.append(f"prtg.error: got {body['error']!r}, expected 1")
        if "result" in body:
            problems.append("prtg: an error payload carries no result")
        if not body.get("text"):
            problems.append("prtg.text: an error payload needs a text")
        return problems
    result = body.get("result")
    if not isinstance(result, list) or not result:
        return [*problems, "prtg.result: expected a non-empty list of channels"]
    if len(result) > MAX_CHANNELS:
        problems.append(f"prtg.result: {len(result)} channels, at most {MAX_CHANNELS} allowed")
    seen: set[str] = set()
    for index, item in enumerate(result):
        problems += _check_channel(item, f"prtg.result[{index}]", seen)
    return problems


def _check_text(text: Any) -> list[str]:
    if not isinstance(text, str):
        return ["prtg.text: expected a string"]
    problems = []
    if len(text) > MAX_TEXT:
        problems.append(f"prtg.text: {len(text)} characters, at most {MAX_TEXT} allowed")
    if "#" in text:
        problems.append("prtg.text: contains '#', which PRTG does not allow")
    if any(ord(c) < 32 for c in text):
        problems.append("prtg.text: contains control characters")
    return problems


def _check_channel(item: Any, where: str, seen: set[str]) -> list[str]:
    if not isinstance(item, dict):
        return [f"{where}: expected an object"]
    problems = [f"{where}.{key}: unknown key" for key in item if key not in CHANNEL_KEYS]
    name = item.get("channel")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}.channel: expected a non-empty name")
    elif name in seen:
        problems.append(f"{where}.channel: {name!r} repeats an earlier channel")
    else:
        seen.add(name)
    for key in _STRINGS & set(item):
        if not isinstance(item[key], str):
            problems.append(f"{where}.{key}: expected a string")
    for key, choices in _CHOICES.items():
        if key in item and item[key] not in choices:
            problems.append(f"{where}.{key}: got {item[key]!r}, expected one of {sorted(choices)}")
    for key in _FLAGS & set(item):
        if item[key] not in (0, 1) or isinstance(item[key], bool):
            problems.append(f"{where}.{key}: got {item[key]!r}, expected 0 or 1")
    is_float = item.get("float") == 1
    value = item.get("value")
    if not _is_number(value):
        problems.append(f"{where}.value: got {value!r}, expected a number")
    elif not is_float and not float(value).is_integer():
        problems.append(
            f"{where}.value: {value!r} is not an integer; a float channel needs float: 1"
        )
    for key in _LIMITS & set(item):
        if not _is_number(item[key]):
            problems.append(f"{where}.{key}: got {item[key]!r}, expected a number")
    if (_LIMITS | {"limiterrormsg", "limitwarningmsg"}) & set(item) and item.get("limitmode") != 1:
        problems.append(f"{where}: limits are ignored without limitmode: 1")
    if "customunit" in item and item.get("unit") != "Custom":
        problems.append(f"{where}.customunit: only used with unit Custom")
    return problems


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return math.isfinite(value)
    if isinstance(value, str):
        try:
            return math.isfinite(float(value))
        except ValueError:
            return False
    return False
