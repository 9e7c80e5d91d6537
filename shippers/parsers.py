"""Log lines into Elastic Common Schema documents (flat, dotted field names).

Each parser turns the first line of an event into a document, or returns None when the
line is not in its format. Continuation lines (tracebacks, JavaScript stacks, indented
JSON) are folded into the event they follow by :func:`fold`. A line no parser knows
becomes a raw document tagged ``parse_failure``: nothing is dropped.

Timestamps are UTC ISO 8601 strings with milliseconds (``2026-11-25T17:16:07.880Z``);
local wall-clock times are read in the source's time zone (:class:`Clock`).
"""

from __future__ import annotations

import calendar
import functools
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import orjson

Doc = dict[str, Any]

LEVELS = {
    "D": "debug", "I": "info", "W": "warning", "E": "error", "C": "critical",
    "warn": "warning", "err": "error", "crit": "critical", "fatal": "critical",
}  # fmt: skip
MONTHS = {name: i for i, name in enumerate(calendar.month_abbr) if name}
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def to_json(doc: Doc) -> bytes:
    """A document as compact UTF-8 JSON: orjson (twenty times faster than the standard
    library), or the standard library for what only it takes (integers past 64 bits).
    A string with a lone surrogate (from a JSON escape) raises ValueError."""
    try:
        return orjson.dumps(doc)
    except TypeError:
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def level(value: str) -> str:
    value = value.strip()
    return LEVELS.get(value) or LEVELS.get(value.lower()) or value.lower()


def iso_from_epoch(seconds: float) -> str:
    """UTC ISO 8601 with milliseconds."""
    whole = int(seconds // 1)
    millis = int(round((seconds - whole) * 1000))
    if millis == 1000:
        whole, millis = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def now_iso() -> str:
    return iso_from_epoch(time.time())


_STAMP = re.compile(r"\d{4}-\d\d-\d\dT(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{3}Z")


@functools.lru_cache(maxsize=4096)
def _real_day(date: str) -> bool:
    """Whether ``YYYY-MM-DD`` (digits) is a day of the calendar, years 1-9999."""
    year, month, day = int(date[0:4]), int(date[5:7]), int(date[8:10])
    return year >= 1 and 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]


_VALID_SECONDS: dict[str, bool] = {}  # valid_timestamp by a stamp's first 19 characters


def valid_timestamp(stamp: object) -> bool:
    """Whether ``stamp`` is a real instant written as this module writes them
    (``YYYY-MM-DDTHH:MM:SS.fffZ``, years 1-9999): no February 30, hour 24 or month 13.
    Each second is checked once (lines come many a second): then only the milliseconds."""
    if not isinstance(stamp, str) or len(stamp) != 24:
        return False
    second = stamp[:19]
    valid = _VALID_SECONDS.get(second)
    if valid is None:
        valid = _STAMP.match(f"{second}.000Z") is not None and _real_day(stamp[:10])
        if len(_VALID_SECONDS) >= 4096:
            _VALID_SECONDS.clear()
        _VALID_SECONDS[second] = valid
    return valid and stamp[19] == "." and stamp[20:23].isdecimal() and stamp[23] == "Z"


# The ends of a timestamp as :func:`valid_timestamp` takes them, in ASCII digits.
STAMP_FRACTIONS = frozenset(f".{millis:03d}Z" for millis in range(1000))


def _naive(y: int, mo: int, d: int, h: int, mi: int, s: int, ms: int = 0) -> str:
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{ms:03d}Z"


class Clock:
    """Reads wall-clock times of one time zone (``local``, ``UTC`` or an IANA name)."""

    def __init__(self, zone: str = "local") -> None:
        self.zone = zone
        self._tz: ZoneInfo | None = None
        if zone.upper() == "UTC":
            self.utc = True
        elif zone == "local":
            self.utc = time.timezone == 0 and not time.daylight
        else:
            self._tz = ZoneInfo(zone)
            self.utc = False

    def iso(self, y: int, mo: int, d: int, h: int, mi: int, s: int, ms: int = 0) -> str:
        """The UTC instant of a wall-clock time; an impossible time is returned as it is
        written, for :func:`valid_timestamp` to catch (never raised, never rolled over
        into the next day as ``mktime`` would)."""
        naive = _naive(y, mo, d, h, mi, s, ms)
        if self.utc or not valid_timestamp(naive):
            return naive
        if self._tz is None:
            epoch = time.mktime((y, mo, d, h, mi, s, 0, 0, -1))
        else:
            epoch = datetime(y, mo, d, h, mi, s, tzinfo=self._tz).timestamp()
        return iso_from_epoch(epoch + ms / 1000)

    def iso_text(self, text: str) -> str:
        """``YYYY-mm-dd HH:MM:SS[.fff]`` (any separators) in this zone, as UTC ISO."""
        if self.utc and len(text) == 23:
            return f"{text[:10]}T{text[11:]}Z"
        ms = int(text[20:23]) if len(text) >= 23 else 0
        return self.iso(
            int(text[0:4]), int(text[5:7]), int(text[8:10]),
            int(text[11:13]), int(text[14:16]), int(text[17:19]), ms,
        )  # fmt: skip

    def today(self, now: float | None = None) -> tuple[int, int, int]:
        now = time.time() if now is None else now
        if self.utc:
            moment = time.gmtime(now)
        elif self._tz is None:
            moment = time.localtime(now)
        else:
            return datetime.fromtimestamp(now, self._tz).timetuple()[:3]
        return moment.tm_year, moment.tm_mon, moment.tm_mday

    def complete(self, hms: str, now: float | None = None) -> str:
        """A time-only ``HH:MM:SS.fff`` completed with today's date (yesterday's if it
        would lie more than an hour in the future: a line from just before midnight)."""
        now = time.time() if now is None else now
        y, mo, d = self.today(now)
        h, mi, s, ms = int(hms[0:2]), int(hms[3:5]), int(hms[6:8]), int(hms[9:12] or 0)
        stamp = self.iso(y, mo, d, h, mi, s, ms)
        if valid_timestamp(stamp) and _epoch(stamp) > now + 3600:
            y, mo, d = self.today(now - 86400)
            stamp = self.iso(y, mo, d, h, mi, s, ms)
        return stamp


def _epoch(stamp: str) -> float:
    return calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))


def normalize_timestamp(value: Any) -> str | None:
    """An ISO 8601 string or epoch number (seconds, or milliseconds past 1e11) as UTC ISO
    with milliseconds; one that names no real instant as its text, for
    :func:`valid_timestamp` to catch; None for any other type."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        if isinstance(value, str):
            moment = datetime.fromisoformat(value.strip())
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            seconds = moment.timestamp()
        else:
            seconds = value / 1000 if value > 1e11 else float(value)
        if math.isfinite(seconds):
            return iso_from_epoch(seconds)
    except (ValueError, OverflowError, OSError):
        pass
    return str(value)[:64]


def split_url(doc: Doc, uri: str) -> None:
    doc["url.original"] = uri
    path, question, query = uri.partition("?")
    doc["url.path"] = path
    if question:
        doc["url.query"] = query


# --- continuation lines --------------------------------------------------------------

_CONTINUATION = re.compile(
    r"\s|[}\])]|Traceback \(most recent call last\)|During handling of the above exception"
    r"|The above exception was the direct cause|[\w.]+(?:Error|Exception|Exit|Interrupt)\b"
)
_EXCEPTION_LINE = re.compile(r"([\w.]+(?:Error|Exception|Exit|Interrupt|Warning)):\s?(.*)")


def is_continuation(line: str) -> bool:
    """Whether a line that starts no event belongs to the event before it."""
    return not line or _CONTINUATION.match(line) is not None


_TRACEBACK = "Traceback (most recent call last)"


def fold(doc: Doc, lines: Sequence[str]) -> None:
    """Fold continuation lines into ``doc``: a stack trace, or more message. An event that
    is a bare traceback (a user server's, printed with no log line before it) is a stack
    trace from its first line, and its message is the exception line."""
    lines = list(lines)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        return
    bare = str(doc.get("message", "")).startswith(_TRACEBACK)
    if bare:
        lines.insert(0, doc["message"])
    text = "\n".join(lines)
    if _TRACEBACK in text or "\n    at " in f"\n{text}":
        doc["error.stack_trace"] = text
        for line in reversed(lines):
            match = _EXCEPTION_LINE.match(line.strip())
            if match:
                doc["error.type"], doc["error.message"] = match.group(1), match.group(2)
                if bare:
                    doc["message"] = match.group(0)
                break
    else:
        doc["message"] = f"{doc.get('message', '')}\n{text}"


# --- parsers -------------------------------------------------------------------------


class Unparsable(Exception):
    """A line in a parser's format that it cannot take (the reason names why): it is
    shipped raw, tagged with the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Parser:
    """One log format: ``parse`` returns the fields of an event starting with ``line``,
    None when the line is not in its format, or raises :class:`Unparsable`."""

    name = "raw"
    dataset = "raw"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def parse(self, line: str) -> Doc | None:
        raise NotImplementedError


class RawParser(Parser):
    """Any line, as the message (for sources configured as ``raw``)."""

    def parse(self, line: str) -> Doc:
        return {"message": line}


_TORNADO = re.compile(
    r"\[([DIWEC]) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ([^\s\]]+)(?: ([^\s\]:]+):(\d{1,9}))?\] ?"
)  # numbers have bounded digits here and below: each fits its field's type (long, float)
_REQUEST = re.compile(
    r"(\d{3}) ([A-Z]+) (\S+)(?: -> (\S+))? \((?:([^()@]*)@)?([^()@\s]*)\) "
    r"(\d{1,12}(?:\.\d{1,9})?)ms\s*$"
)


_WEB_WARNING = re.compile(r"(\d{3}) ([A-Z]+) (\S+) \(([^()\s]*)\): ")


def _named(user: str, server: str = "") -> Doc:
    """A user and, for a named server, the server (as the container labels have it)."""
    doc: Doc = {"user.name": user}
    if server:
        doc["labels.jupyterhub_server"] = server
    return doc


def _route(spec: str) -> Doc:
    """The user and server of a proxy route ``[host][/base]/user/<name>/[<server>/]``."""
    _, found, rest = spec.partition("/user/")
    if not found:
        return {}  # a service's route
    user, _, server = rest.partition("/")
    return _named(unquote(user), unquote(server.partition("/")[0]))


def _unquoted(text: str) -> str:
    """A name as ``%r`` writes it (JupyterHub 6) without its quotes."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


# The fields each named group of a pattern below becomes.
_GROUPS: dict[str, Callable[[str], Doc]] = {
    "owner": lambda text: _named(*text.split(":", 1)),  # user or user:server
    "user": _named,
    "server": lambda text: {"labels.jupyterhub_server": text} if text else {},
    "login": lambda text: _named(_unquoted(text)),
    "route": _route,
    "seconds": lambda text: {"event.duration": round(float(text) * 1e9)},
    "code": lambda text: {"process.exit_code": int(text)},
    "failure": lambda text: {"labels.spawn_failure": text.strip()[:200]},  # a countable keyword
    "name": lambda text: {"container.name": text},
    "id": lambda text: {"container.id": text},
    "image": lambda text: {"container.image.name": text},
    "options": lambda text: {"labels.user_options": text},
}
_Rules = list[tuple[re.Pattern[str], str]]


def _rules(*rules: tuple[str, str]) -> _Rules:
    return [(re.compile(pattern), action) for pattern, action in rules]


_SECONDS = r"(?P<seconds>\d{1,12}(?:\.\d{1,9})?) seconds"
_NAME_ID = r"(?P<name>\S+) \(id: (?P<id>\w+)\)"  # DockerSpawner logs 7 characters of the id
_CONTAINER = rf"container {_NAME_ID}"
_FAILED = r"(?P<user>\S+?)'s server(?::\s*(?P<failure>.+))?"

# JupyterHub 5/6 and DockerSpawner 13/14 lines by their first word: (pattern matched at the
# start of the message, event.action), tried in order. Every pattern is anchored and each
# unbounded run stops at a literal that cannot occur inside it, so matching is linear.
_BY_FIRST_WORD: dict[str, _Rules] = {
    "User": _rules(
        (rf"User (?P<owner>\S+) took {_SECONDS} to start", "spawn"),
        (rf"User (?P<user>\S+) server took {_SECONDS} to stop", "stop"),
        # a server found dead by the hub (DockerSpawner's poll says ``ExitCode=137, ...``)
        (r"User (?P<user>\S+) server stopped,? with exit code: "
         r"(?:ExitCode=)?(?P<code>-?\d{1,10}(?!\d))?", "server-exited"),
        (r"User logged in: (?P<user>\S+)", "login"),
        (r"User logged out: (?P<user>\S+)", "logout"),
    ),
    "Failed": _rules((r"Failed login for (?P<login>.+)", "login-failed")),
    "Error": _rules((rf"Error starting {_FAILED}", "spawn-failed")),
    "Unhandled": _rules((rf"Unhandled error starting {_FAILED}", "spawn-failed")),
    "Not": _rules(
        (r"Not starting (?P<user>\S+?)'s server (?P<server>\S*): (?P<failure>.+)", "spawn-failed"),
    ),
    "Received": _rules(  # JupyterHub 5.3+: options no apply_user_options hook handled
        (r"Received unhandled user_options for (?P<owner>\S+?): (?P<options>.+)",
         "user-options-unhandled"),
    ),
    "Adding": _rules((r"Adding missing route for (?P<route>\S+)", "route-added")),
    "Created": _rules((rf"Created {_CONTAINER} from image (?P<image>\S+)", "container-created")),
    "Found": _rules((rf"Found existing {_CONTAINER}", "container-found")),
    "Starting": _rules((rf"Starting {_CONTAINER}", "container-starting")),
    "Stopping": _rules((rf"Stopping {_CONTAINER}", "container-stopping")),
    "Removing": _rules(
        (rf"Removing container that should have been cleaned up: {_NAME_ID}",
         "container-removing"),
        (r"Removing container (?P<id>\w+)$", "container-removing"),
    ),
    "Container": _rules(
        (r"Container '(?P<name>[^']*)' is gone", "container-gone"),
        (r"Container '(?P<name>[^']*)' is on unhealthy node", "container-unhealthy"),
        (r"Container not found: (?P<name>\S+)", "container-not-found"),
    ),
}  # fmt: skip
# Lines that start with the name: (their ending, a pattern of the whole message, action).
_BY_ENDING: list[tuple[str, re.Pattern[str], str]] = [
    (ending, re.compile(pattern), action)
    for ending, pattern, action in [
        # a standby adopting the servers of the hub it replaces
        (" still running", r"(?P<owner>\S+) still running", "server-adopted"),
        (" appears to have stopped while the Hub was down",
         r"(?P<owner>\S+) appears to have stopped while the Hub was down", "server-exited"),
        (", giving up.",
         r"(?P<user>\S+?)'s server (?P<failure>failed to start in \d{1,12}(?:\.\d{1,9})? seconds), "
         r"giving up\.", "spawn-failed"),
    ]
]  # fmt: skip


_ENDINGS = tuple(ending for ending, _, _ in _BY_ENDING)


def _fields(found: re.Match[str], action: str) -> Doc:
    doc: Doc = {"event.action": action}
    for group, text in found.groupdict().items():
        if text is not None:
            doc.update(_GROUPS[group](text))
    return doc


def hub_event(message: str) -> Doc:
    """``event.action`` and the user, server and container fields of a JupyterHub or
    DockerSpawner message (the text after the log prefix); {} for any other message."""
    for pattern, action in _BY_FIRST_WORD.get(message.partition(" ")[0], ()):
        found = pattern.match(message)
        if found:
            return _fields(found, action)
    if message.endswith(_ENDINGS):
        for ending, pattern, action in _BY_ENDING:
            found = pattern.fullmatch(message) if message.endswith(ending) else None
            if found:
                return _fields(found, action)
    return {}


def http_fields(message: str, doc: Doc | None = None) -> Doc:
    """A request line (``200 GET /hub/api/users (user@ip) 5.23ms``) or tornado's warning
    about a refused request (``403 GET /hub/api/users (ip): Missing or invalid
    credentials.``, its reason as ``event.reason``) as ECS fields; {} for other messages.
    Given a ``doc``, the fields are written into it (and it is returned)."""
    if doc is None:
        doc = {}
    request = _REQUEST.match(message)
    if request:
        status, method, uri, _location, user, ip, millis = request.groups()
        doc["event.duration"] = round(float(millis) * 1_000_000)
        if user:
            doc["user.name"] = user
    else:
        request = _WEB_WARNING.match(message)
        if request is None:
            return doc
        status, method, uri, ip = request.groups()
        doc["event.reason"] = message[request.end() :]
    doc["http.response.status_code"] = int(status)
    doc["http.request.method"] = method
    split_url(doc, uri)
    if ip:
        doc["client.ip"] = ip
    return doc


class TornadoParser(Parser):
    """JupyterHub and Jupyter Server: ``[L yyyy-mm-dd hh:mm:ss.mmm Logger module:line] msg``,
    with request lines, refused requests, and spawn, stop, login, container and adoption
    lines (:func:`hub_event`)."""

    name = dataset = "jupyterhub"

    def parse(self, line: str) -> Doc | None:
        match = _TORNADO.match(line)
        if match is None:
            return None
        message = line[match.end() :]
        letter, stamp, logger, origin, number = match.groups()
        doc: Doc = {
            "@timestamp": self.clock.iso_text(stamp),
            "log.level": LEVELS[letter],
            "log.logger": logger,
            "message": message,
        }
        if origin:
            doc["log.origin.file.name"] = origin
            doc["log.origin.file.line"] = int(number)
        if message[:1].isdigit():
            http_fields(message, doc)
        else:
            doc.update(hub_event(message))
        return doc


_CHP = re.compile(
    r"(?:(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z|(\d\d:\d\d:\d\d\.\d{3})) \[(\w+)\] (\w+): ?"
)
_CHP_REQUEST = re.compile(r"(\d{3}) ([A-Z]+) (\S+)")


class ChpParser(Parser):
    """configurable-http-proxy: ``[date]time [ConfigProxy] level: message`` (ANSI removed)."""

    name = "chp"
    dataset = "proxy"

    def parse(self, line: str) -> Doc | None:
        if "\x1b" in line:
            line = ANSI.sub("", line)
        match = _CHP.match(line)
        if match is None:
            return None
        iso, hms, logger, lvl = match.groups()
        message = line[match.end() :].rstrip()
        doc: Doc = {
            "@timestamp": f"{iso}Z" if iso else self.clock.complete(hms),
            "log.level": level(lvl),
            "log.logger": logger,
            "message": message,
        }
        request = _CHP_REQUEST.match(message)
        if request:
            doc["http.response.status_code"] = int(request.group(1))
            doc["http.request.method"] = request.group(2)
            split_url(doc, request.group(3))
        return doc


# NGINX writes a double quote inside a field as \x22, so no field holds one.
_NGINX_ACCESS = re.compile(
    r"(\S+) - (\S+) \[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "
    r'"([^"]*)" (\d{3}) (\d{1,18}|-) "([^"]*)" "([^"]*)"'
)
_MONTH_DIGITS = {name: f"{number:02d}" for name, number in MONTHS.items()}


@functools.lru_cache(maxsize=4096)
def _nginx_time(when: str) -> str | None:
    """``dd/Mon/yyyy:HH:MM:SS +zzzz`` as UTC ISO; None for an unknown month. Each second
    is read once (lines come many a second)."""
    d, mon, y, hms, zone = when[0:2], when[3:6], when[7:11], when[12:20], when[21:26]
    month = _MONTH_DIGITS.get(mon)
    if month is None:
        return None
    stamp = f"{y}-{month}-{d}T{hms}.000Z"
    if zone[1:] != "0000" and valid_timestamp(stamp):
        offset = (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60) * (1 if zone[0] == "+" else -1)
        h, mi, s = int(hms[0:2]), int(hms[3:5]), int(hms[6:8])
        local = calendar.timegm((int(y), int(month), int(d), h, mi, s, 0, 0, 0))
        stamp = iso_from_epoch(local - offset)
    return stamp


class NginxAccessParser(Parser):
    """NGINX ``combined`` access log lines."""

    name = "nginx_access"
    dataset = "nginx.access"

    def parse(self, line: str) -> Doc | None:
        match = _NGINX_ACCESS.match(line)
        if match is None:
            return None
        ip, user, when, request, status, size, referrer, agent = match.groups()
        stamp = _nginx_time(when)
        if stamp is None:
            return None
        doc: Doc = {
            "@timestamp": stamp,
            "message": line,
            "client.ip": ip,
            "http.response.status_code": int(status),
        }
        if user != "-":
            doc["user.name"] = user
        parts = request.split(" ")
        if len(parts) == 3:
            doc["http.request.method"] = parts[0]
            split_url(doc, parts[1])
            doc["http.version"] = parts[2].removeprefix("HTTP/")
        elif request and request != "-":
            doc["url.original"] = request
        if size != "-":
            doc["http.response.body.bytes"] = int(size)
        if referrer != "-":
            doc["http.request.referrer"] = referrer
        if agent != "-":
            doc["user_agent.original"] = agent
        return doc


_NGINX_ERROR = re.compile(
    r"(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[(\w+)\] (\d{1,18})#(\d{1,18}): (?:\*(\d{1,18}) )?"
)
_NGINX_ERROR_FIELDS = re.compile(r', (client|server|request|upstream|host): "?([^",]*)"?')


class NginxErrorParser(Parser):
    """NGINX error log lines: ``yyyy/mm/dd hh:mm:ss [level] pid#tid: *cid message``."""

    name = "nginx_error"
    dataset = "nginx.error"

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        # Its times are whole seconds, and errors come in bursts: each second read once.
        self._iso_text = functools.lru_cache(maxsize=4096)(clock.iso_text)

    def parse(self, line: str) -> Doc | None:
        match = _NGINX_ERROR.match(line)
        if match is None:
            return None
        stamp, lvl, pid, tid, connection = match.groups()
        message = line[match.end() :]
        doc: Doc = {
            "@timestamp": self._iso_text(stamp),
            "log.level": level(lvl),
            "process.pid": int(pid),
            "process.thread.id": int(tid),
            "message": message,
        }
        if connection:
            doc["hubkeeper.nginx.connection_id"] = int(connection)
        for key, value in _NGINX_ERROR_FIELDS.findall(message):
            if key == "client":
                doc["client.ip"] = value
            elif key == "request":
                parts = value.split(" ")
                if len(parts) >= 2:
                    doc["http.request.method"] = parts[0]
                    split_url(doc, parts[1])
            elif key == "upstream":
                doc["hubkeeper.nginx.upstream"] = value
        return doc


_JSON_FIELDS: list[tuple[str, tuple[str, ...]]] = [
    ("@timestamp", ("@timestamp", "timestamp", "time", "ts")),
    ("message", ("message", "msg", "event")),
    ("log.level", ("log.level", "level", "levelname", "severity")),
    ("log.logger", ("log.logger", "logger", "name")),
    ("error.stack_trace", ("error.stack_trace", "exception", "exc_info", "stack_trace")),
]


MAX_JSON_DEPTH = 16  # nested objects and arrays (Elasticsearch refuses past 20)


def _finite_float(text: str) -> float | str:
    """A JSON number as a float; one too large for a double (``1e400``) as its text, never
    infinity, which no JSON encoder may write."""
    value = float(text)
    return value if math.isfinite(value) else text


def _depth(value: Any) -> int:
    """How deeply objects and arrays nest in ``value`` (iteratively: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (
                item.values() if isinstance(item, dict) else item
            ))  # fmt: skip
    return deepest


#: Loggers of hubkeeper's own daemons (their JSON lines name the module).
OWN_LOGGERS = "hubkeeper."
#: Context keys of hubkeeper's own events that dashboards count by, and their fields.
DAEMON_KEYS: dict[str, str] = {
    "user": "user.name",
    "server": "labels.jupyterhub_server",
    "hub": "labels.hub",
    "reason": "event.reason",
    **{key: f"hubkeeper.event.{key}" for key in
       ("action", "active", "kind", "result", "source", "state", "target")},
}  # fmt: skip
# A key path longer than this (a.b.c) cannot be one term of the flattened hubkeeper.json
# (Lucene's 32766 bytes, with the value, at most 1024 characters, and 4-byte characters).
MAX_KEY_PATH = 7000


def _daemon_context(doc: Doc, data: dict[str, Any]) -> None:
    """Move the scalar values of :data:`DAEMON_KEYS` into their fields, as keywords."""
    for key, name in DAEMON_KEYS.items():
        value = data.get(key)
        if isinstance(value, str | int | float):
            doc[name] = value if isinstance(value, str) else json.dumps(value)
            del data[key]


def _longest_key_path(value: Any) -> int:
    """The longest dotted key path (``a.b.c``) in ``value``, in characters."""
    longest, stack = 0, [(value, -1)]
    while stack:
        item, length = stack.pop()
        if isinstance(item, dict):
            stack.extend((child, length + 1 + len(key)) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, length) for child in item)
        else:
            longest = max(longest, length)
    return longest


class JsonParser(Parser):
    """JSON lines (hubkeeper's own logs, servers that log JSON): the usual keys become ECS
    fields, the context keys of hubkeeper's own events typed fields (:data:`DAEMON_KEYS`);
    the rest is kept under ``hubkeeper.json`` (one ``flattened`` field)."""

    name = "json"
    dataset = "json"

    def parse(self, line: str) -> Doc | None:
        if not line.startswith("{"):
            return None
        try:
            data = json.loads(line, parse_constant=str, parse_float=_finite_float)
        except (ValueError, RecursionError):
            return None
        if line.count("{") + line.count("[") > MAX_JSON_DEPTH and _depth(data) > MAX_JSON_DEPTH:
            raise Unparsable("json_too_deep")
        if not isinstance(data, dict):
            return None
        doc: Doc = {}
        for target, keys in _JSON_FIELDS:
            for key in keys:
                value = data.get(key)
                if isinstance(value, str | int | float) and not isinstance(value, bool):
                    data.pop(key)
                    if target == "@timestamp":  # checked with the others when recorded
                        value = normalize_timestamp(value)
                    elif target == "log.level":
                        value = level(str(value))
                    doc[target] = value if target == "@timestamp" else str(value)
                    if key == "event":  # structlog's event name is what happened
                        doc["event.action"] = doc[target]
                    break
        doc.setdefault("message", "")
        if str(doc.get("log.logger", "")).startswith(OWN_LOGGERS):
            _daemon_context(doc, data)
        if data:
            if len(line) > MAX_KEY_PATH and _longest_key_path(data) > MAX_KEY_PATH:
                raise Unparsable("json_key_too_long")
            doc["hubkeeper.json"] = data
        return doc


class AnyOf(Parser):
    """Several formats in one file (JupyterHub's log also carries its proxy's lines)."""

    def __init__(self, clock: Clock, parsers: Sequence[Parser], name: str) -> None:
        super().__init__(clock)
        self.parsers = list(parsers)
        self.name = name
        self.dataset = self.parsers[0].dataset

    def parse(self, line: str) -> Doc | None:
        for parser in self.parsers:
            doc = parser.parse(line)
            if doc is not None:
                doc.setdefault("event.dataset", parser.dataset)
                return doc
        return None


PARSERS: dict[str, Callable[[Clock], Parser]] = {
    "jupyterhub": lambda clock: AnyOf(
        clock, [TornadoParser(clock), ChpParser(clock)], "jupyterhub"
    ),
    "chp": ChpParser,
    "nginx_access": NginxAccessParser,
    "nginx_error": NginxErrorParser,
    "json": JsonParser,
    "raw": RawParser,
    "auto": lambda clock: AnyOf(
        clock,
        [
            JsonParser(clock),
            TornadoParser(clock),
            ChpParser(clock),
            NginxAccessParser(clock),
            NginxErrorParser(clock),
        ],
        "auto",
    ),  # fmt: skip
}


def make_parser(name: str, zone: str = "local") -> Parser:
    return PARSERS[name](Clock(zone))
