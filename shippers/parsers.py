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
import json
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

Doc = dict[str, Any]

LEVELS = {
    "D": "debug", "I": "info", "W": "warning", "E": "error", "C": "critical",
    "warn": "warning", "err": "error", "crit": "critical", "fatal": "critical",
}  # fmt: skip
MONTHS = {name: i for i, name in enumerate(calendar.month_abbr) if name}
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


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
        if self.utc:
            return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{ms:03d}Z"
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
        if _epoch(stamp) > now + 3600:
            y, mo, d = self.today(now - 86400)
            stamp = self.iso(y, mo, d, h, mi, s, ms)
        return stamp


def _epoch(stamp: str) -> float:
    return calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))


def normalize_timestamp(value: Any) -> str | None:
    """An ISO 8601 string or epoch number as UTC ISO with milliseconds; None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return iso_from_epoch(value / 1000 if value > 1e11 else value)
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return iso_from_epoch(moment.timestamp())


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


def fold(doc: Doc, lines: Sequence[str]) -> None:
    """Fold continuation lines into ``doc``: a stack trace, or more message."""
    lines = list(lines)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        return
    text = "\n".join(lines)
    if "Traceback (most recent call last)" in text or "\n    at " in f"\n{text}":
        doc["error.stack_trace"] = text
        for line in reversed(lines):
            match = _EXCEPTION_LINE.match(line.strip())
            if match:
                doc["error.type"], doc["error.message"] = match.group(1), match.group(2)
                break
    else:
        doc["message"] = f"{doc.get('message', '')}\n{text}"


# --- parsers -------------------------------------------------------------------------


class Parser:
    """One log format: ``parse`` returns the fields of an event starting with ``line``."""

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
    r"\[([DIWEC]) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ([^\s\]]+)(?: ([^\s\]:]+):(\d+))?\] ?"
)
_REQUEST = re.compile(
    r"(\d{3}) ([A-Z]+) (\S+)(?: -> (\S+))? \((?:([^()@]*)@)?([^()@\s]*)\) (\d+(?:\.\d+)?)ms\s*$"
)


def _seconds_as_ns(text: str) -> tuple[str, int]:
    return "event.duration", round(float(text) * 1e9)


def _exit_code(text: str) -> tuple[str, int]:
    return "process.exit_code", int(text)


def _failure(text: str) -> tuple[str, str]:
    """The reason a spawn failed, as a keyword ops can count (the start of it)."""
    return "labels.spawn_failure", text.strip()[:200]


# (pattern, action, the field of the pattern's second group); the first group is the user
_ACTIONS: list[tuple[re.Pattern[str], str, Callable[[str], tuple[str, str | int]] | None]] = [
    (re.compile(r"User (\S+) took (\d+(?:\.\d+)?) seconds to start"), "spawn", _seconds_as_ns),
    (re.compile(r"User (\S+) server took (\d+(?:\.\d+)?) seconds to stop"), "stop",
     _seconds_as_ns),
    # a server found dead by the hub (DockerSpawner's poll says ``ExitCode=137, ...``)
    (re.compile(r"User (\S+) server stopped,? with exit code: (?:ExitCode=)?(-?\d+)?"),
     "server-exited", _exit_code),
    (re.compile(r"([^\s:]+)(?::\S+)? appears to have stopped while the Hub was down"),
     "server-exited", None),
    (re.compile(r"(?:Unhandled error starting|Error starting) (\S+?)'s server(?::\s*(.+))?"),
     "spawn-failed", _failure),
    (re.compile(r"User logged in: (\S+)"), "login", None),
    (re.compile(r"User logged out: (\S+)"), "logout", None),
]  # fmt: skip


class TornadoParser(Parser):
    """JupyterHub and Jupyter Server: ``[L yyyy-mm-dd hh:mm:ss.mmm Logger module:line] msg``,
    with request lines ``200 GET /hub/api/users (user@ip) 5.23ms`` and spawn/stop lines."""

    name = dataset = "jupyterhub"

    def parse(self, line: str) -> Doc | None:
        match = _TORNADO.match(line)
        if match is None:
            return None
        message = line[match.end() :]
        doc: Doc = {
            "@timestamp": self.clock.iso_text(match.group(2)),
            "log.level": LEVELS[match.group(1)],
            "log.logger": match.group(3),
            "message": message,
        }
        if match.group(4):
            doc["log.origin.file.name"] = match.group(4)
            doc["log.origin.file.line"] = int(match.group(5))
        if message[:1].isdigit():
            request = _REQUEST.match(message)
            if request:
                status, method, uri, _location, user, ip, millis = request.groups()
                doc["http.response.status_code"] = int(status)
                doc["http.request.method"] = method
                split_url(doc, uri)
                if user:
                    doc["user.name"] = user
                if ip:
                    doc["client.ip"] = ip
                doc["event.duration"] = round(float(millis) * 1_000_000)
                return doc
        if "User " in message or "starting" in message or "stopped" in message:
            for pattern, action, second in _ACTIONS:
                found = pattern.search(message)
                if found:
                    doc["event.action"] = action
                    doc["user.name"] = found.group(1)
                    if second is not None and found.group(2) is not None:
                        name, value = second(found.group(2))
                        doc[name] = value
                    break
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
    r"(\S+) - (\S+) \[(\d\d)/(\w{3})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)\] "
    r'"([^"]*)" (\d{3}) (\d+|-) "([^"]*)" "([^"]*)"'
)


class NginxAccessParser(Parser):
    """NGINX ``combined`` access log lines."""

    name = "nginx_access"
    dataset = "nginx.access"

    def parse(self, line: str) -> Doc | None:
        match = _NGINX_ACCESS.match(line)
        if match is None:
            return None
        (ip, user, d, mon, y, h, mi, s, sign, oh, om,
         request, status, size, referrer, agent) = match.groups()  # fmt: skip
        month = MONTHS.get(mon)
        if month is None:
            return None
        if oh == "00" and om == "00":
            stamp = f"{y}-{month:02d}-{d}T{h}:{mi}:{s}.000Z"
        else:
            offset = (int(oh) * 3600 + int(om) * 60) * (1 if sign == "+" else -1)
            local = calendar.timegm((int(y), month, int(d), int(h), int(mi), int(s), 0, 0, 0))
            stamp = iso_from_epoch(local - offset)
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


_NGINX_ERROR = re.compile(r"(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[(\w+)\] (\d+)#(\d+): (?:\*(\d+) )?")
_NGINX_ERROR_FIELDS = re.compile(r', (client|server|request|upstream|host): "?([^",]*)"?')


class NginxErrorParser(Parser):
    """NGINX error log lines: ``yyyy/mm/dd hh:mm:ss [level] pid#tid: *cid message``."""

    name = "nginx_error"
    dataset = "nginx.error"

    def parse(self, line: str) -> Doc | None:
        match = _NGINX_ERROR.match(line)
        if match is None:
            return None
        stamp, lvl, pid, tid, connection = match.groups()
        message = line[match.end() :]
        doc: Doc = {
            "@timestamp": self.clock.iso_text(stamp),
            "log.level": level(lvl),
            "process.pid": int(pid),
            "process.thread.id": int(tid),
            "message": message,
        }
        if connection:
            doc["nginx.error.connection_id"] = int(connection)
        for key, value in _NGINX_ERROR_FIELDS.findall(message):
            if key == "client":
                doc["client.ip"] = value
            elif key == "request":
                parts = value.split(" ")
                if len(parts) >= 2:
                    doc["http.request.method"] = parts[0]
                    split_url(doc, parts[1])
            elif key == "upstream":
                doc["nginx.error.upstream"] = value
        return doc


_JSON_FIELDS: list[tuple[str, tuple[str, ...]]] = [
    ("@timestamp", ("@timestamp", "timestamp", "time", "ts")),
    ("message", ("message", "msg", "event")),
    ("log.level", ("log.level", "level", "levelname", "severity")),
    ("log.logger", ("log.logger", "logger", "name")),
    ("error.stack_trace", ("error.stack_trace", "exception", "exc_info", "stack_trace")),
]


class JsonParser(Parser):
    """JSON lines (hubkeeper's own logs, servers that log JSON): the usual keys become ECS
    fields; the rest is kept under ``json``."""

    name = "json"
    dataset = "json"

    def parse(self, line: str) -> Doc | None:
        if not line.startswith("{"):
            return None
        try:
            data = json.loads(line)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        doc: Doc = {}
        for target, keys in _JSON_FIELDS:
            for key in keys:
                if key in data and isinstance(data[key], str | int | float):
                    value = data.pop(key)
                    if target == "@timestamp":
                        value = normalize_timestamp(value)
                        if value is None:
                            continue
                    elif target == "log.level":
                        value = level(str(value))
                    doc[target] = value if target == "@timestamp" else str(value)
                    if key == "event":  # structlog's event name is what happened
                        doc["event.action"] = doc[target]
                    break
        doc.setdefault("message", "")
        if data:
            doc["json"] = data
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
