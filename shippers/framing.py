"""From bytes at file offsets to events: lines, Docker json-file records, multi-line events.

Every stage keeps the file offsets of what it emits (``start`` of the first byte, ``end``
after the last), and reports the offset from which reading must resume so that nothing
still pending (a line without its newline, a partial Docker record, an event that more
continuation lines may join) is lost: ``resume`` is never past a pending piece's start.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from hubkeeper.shippers.parsers import Doc, Parser, Unparsable, fold, is_continuation

TRUNCATED = "truncated"
INVALID_UTF8 = "invalid_utf8"
PARSE_FAILURE = "parse_failure"  # shipped raw; ``hubkeeper.failure`` says why
FAILURE = "hubkeeper.failure"
UNKNOWN_FORMAT = "unknown_format"  # no parser knows the line
PARSER_ERROR = "parser_error"  # a parser raised on it (a bug, or a value it cannot take)
CHUNK = 1 << 20


@dataclass(slots=True)
class Line:
    """One line of text and where it lies in the file; ``clean``: screened, and nothing in
    it for the redactor to mask.

    The first line of an event becomes the event (:class:`Assembler`, no second object
    per line): it gets its document, the text of its continuation lines (joined), ``end``
    after the last of them, ``clean`` only if every one of them is, and ``resume``, where
    to read on after it."""

    text: str
    start: int
    end: int
    tags: tuple[str, ...] = ()
    stream: str | None = None
    time: str | None = None
    clean: bool = False
    doc: Doc | None = None
    resume: int = 0


Event = Line  # a line that starts an event, once parsed


def decode(data: bytes, truncated: bool = False) -> tuple[str, tuple[str, ...]]:
    """UTF-8 text; invalid bytes become U+FFFD and tag the line (a character cut by
    truncation does not)."""
    tags: tuple[str, ...] = (TRUNCATED,) if truncated else ()
    if data.endswith(b"\r"):
        data = data[:-1]
    try:
        return data.decode("utf-8"), tags
    except UnicodeDecodeError as error:
        if truncated and error.start >= len(data) - 3:
            return data[: error.start].decode("utf-8", "replace"), tags
        return data.decode("utf-8", "replace"), (*tags, INVALID_UTF8)


def read_lines(
    read_at: Callable[[int, int], bytes],
    start: int,
    size: int,
    max_bytes: int,
    window: int,
    final: bool = False,
    screen: Callable[[str], list[int]] | None = None,
) -> Iterator[Line]:
    """Complete lines from ``start`` on, about ``window`` bytes of them (at least twice
    ``max_bytes``: an event and the line that ends it always fit).

    A line longer than ``max_bytes`` keeps its first ``max_bytes`` bytes, is tagged
    ``truncated``, and ends at its newline; the rest is skipped without being held in
    memory. A last line without its newline is not returned (it is read again later),
    unless ``final`` says that nothing more will come.

    ``screen`` (:meth:`hubkeeper.redact.Redactor.screen`) is run over each ASCII block
    read, and the lines where it found nothing are marked ``clean``. An ASCII block is
    also cut into lines as text, without decoding each line.
    """
    window = max(window, 2 * (max_bytes + 1))
    position, kept = start, 0
    while kept < window:
        data = read_at(position, min(window - kept, max(size - position, 0)))
        i, n = 0, len(data)
        if data.isascii():
            text = data.decode("ascii")
            hits = screen(text) if screen is not None else []
            h, last, crlf = 0, len(hits), "\r" in text
            for line in text.split("\n")[:-1]:  # the last piece is partial: as below
                j = i + len(line)
                if j - i > max_bytes:
                    break  # a long one: as below
                while h < last and hits[h] < i:
                    h += 1
                if crlf and line[-1:] == "\r":
                    line = line[:-1]
                clean = screen is not None and (h == last or hits[h] >= j)
                yield Line(line, position + i, position + j + 1, (), None, None, clean)
                i = j + 1
            kept += i  # each line's bytes and newline
        while i < n:
            j = data.find(b"\n", i)
            if j < 0:
                break
            if j - i > max_bytes:
                text, tags = decode(data[i : i + max_bytes], truncated=True)
            else:
                text, tags = decode(data[i:j])
            yield Line(text, position + i, position + j + 1, tags)
            kept += min(j - i, max_bytes) + 1
            i = j + 1
        if n - i <= max_bytes:
            if final and i < n and position + n >= size:
                text, tags = decode(data[i:])
                yield Line(text, position + i, position + n, tags)
            return  # the end of the window or of the file; a partial line waits
        end = _newline_after(read_at, position + n)  # a long line: keep its head only
        if end is None:
            return  # no newline yet: try again when there is more
        text, tags = decode(data[i : i + max_bytes], truncated=True)
        yield Line(text, position + i, end, tags)
        kept += max_bytes + 1
        position = end


def _newline_after(read_at: Callable[[int, int], bytes], position: int) -> int | None:
    """The offset just past the next newline at or after ``position``."""
    while True:
        chunk = read_at(position, CHUNK)
        if not chunk:
            return None
        k = chunk.find(b"\n")
        if k >= 0:
            return position + k + 1
        position += len(chunk)


class DockerRecords:
    """Docker json-file records into lines, reassembling the 16 KiB partial records of a
    long line (every record but the last lacks the final newline), per stream."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._pending: dict[str, tuple[int, str | None, list[str], int, tuple[str, ...]]] = {}
        self._skipping: set[str] = set()

    def pending_start(self) -> int | None:
        return min((group[0] for group in self._pending.values()), default=None)

    def feed(self, line: Line) -> list[Line]:
        try:
            record = json.loads(line.text)
            text, stream, stamp = record["log"], record.get("stream", "stdout"), record.get("time")
            if not (isinstance(text, str) and isinstance(stream, str)):
                raise TypeError
        except (ValueError, TypeError, KeyError, RecursionError):
            return [line]  # not a record: pass it on as it is
        if not isinstance(stamp, str):
            stamp = None
        final = text.endswith("\n")
        if stream in self._skipping:  # the rest of a line already sent, cut
            if final:
                self._skipping.discard(stream)
            return []
        group = self._pending.pop(stream, None)
        if group is None:
            group = (line.start, stamp, [], 0, ())
        start, first_stamp, parts, length, group_tags = group
        parts.append(text[: self.max_bytes - length])
        length += len(text)
        group_tags = (*group_tags, *[tag for tag in line.tags if tag not in group_tags])
        if length > self.max_bytes:
            # Sent at once, so that a group always ends within one read window; the rest
            # of the line is skipped (in a later read it would be a line of its own).
            group_tags = (*group_tags, TRUNCATED)
            if not final:
                self._skipping.add(stream)
            final = True
        if not final:
            self._pending[stream] = (start, first_stamp, parts, length, group_tags)
            return []
        whole = "".join(parts)
        whole = whole[:-1] if whole.endswith("\n") else whole
        return [Line(whole, start, line.end, group_tags, stream, first_stamp)]

    def flush(self, end: int) -> list[Line]:
        """Whatever is pending, as it is (the writer has gone quiet)."""
        lines = [
            Line("".join(parts), start, end, tags, stream, stamp)
            for stream, (start, stamp, parts, _length, tags) in self._pending.items()
        ]
        self._pending.clear()
        return sorted(lines, key=lambda line: line.start)


def raw(text: str, reason: str) -> Doc:
    """A line shipped as it is, tagged with the reason it was not parsed."""
    return {"message": text, "tags": [PARSE_FAILURE], FAILURE: reason}


class Assembler:
    """Lines into events: a line the parser knows starts an event, continuation lines
    (tracebacks, stacks) join it, any other line becomes an event of its own: tagged
    ``parse_failure`` (``unknown_format``), or a plain message where plain text is what
    the source prints (``plain``: user servers' output).

    A parser that raises fails that line only: it is shipped raw (``parser_error``)."""

    def __init__(
        self, parser: Parser, max_bytes: int, max_lines: int = 500, plain: bool = False
    ) -> None:
        self.parser = parser
        self.max_bytes = max_bytes
        self.max_lines = max_lines
        self.plain = plain
        # Per stream: the event its last line started, and the continuation lines joined
        # to it so far with their size in all (the first line's included).
        self._pending: dict[str | None, Event] = {}
        self._more: dict[str | None, tuple[list[str], int]] = {}

    def pending_start(self) -> int | None:
        if len(self._pending) == 1:  # the usual case: one stream
            return next(iter(self._pending.values())).start
        return min((p.start for p in self._pending.values()), default=None)

    def feed(self, line: Line) -> list[Event]:
        text, stream = line.text, line.stream
        try:
            doc = self.parser.parse(text)
        except Unparsable as unparsable:
            doc = raw(text, unparsable.reason)
        except Exception:
            doc = raw(text, PARSER_ERROR)
        pending = self._pending.get(stream)
        if doc is None and pending is not None and is_continuation(text):
            extra, size = self._more.get(stream) or ([], len(pending.text))
            # An event is capped (lines, bytes), so it always ends within one read window;
            # continuation lines past the cap start an event of their own.
            if len(extra) < self.max_lines and size < self.max_bytes:
                extra.append(text[: self.max_bytes - size])
                self._more[stream] = (extra, size + len(text) + 1)
                pending.end = line.end
                pending.clean = pending.clean and line.clean
                return []
        if pending is None:
            done = []
        elif stream in self._more:  # continuation lines to fold into it
            done = self._finish(stream)
        else:  # a line of its own: replaced below as the pending event
            done = [pending]
        if doc is None:
            doc = {"message": text} if self.plain else raw(text, UNKNOWN_FORMAT)
        line.doc, line.resume = doc, line.end
        self._pending[stream] = line
        return done

    def flush(self) -> list[Event]:
        events = [event for stream in list(self._pending) for event in self._finish(stream)]
        return sorted(events, key=lambda event: event.start)

    def _finish(self, stream: str | None) -> list[Event]:
        event = self._pending.pop(stream, None)
        if event is None:
            return []
        more = self._more.pop(stream, None)
        if more is not None:
            extra, size = more
            fold(event.doc, extra)
            event.text = "\n".join([event.text, *extra])
            if size > self.max_bytes and TRUNCATED not in event.tags:
                event.tags = (*event.tags, TRUNCATED)
            event.resume = event.end
        return [event]


def events_from(
    lines: Iterator[Line],
    docker: DockerRecords | None,
    assembler: Assembler,
    flush: bool,
    end: int | None = None,
) -> tuple[list[Event], int | None]:
    """Run lines through the stages; returns the events and the offset to resume from
    (None when nothing was consumed). ``flush`` sends what is pending too, but only once
    the lines reached ``end`` (the end of the file): more lines may continue it."""
    events: list[Event] = []
    consumed: int | None = None
    feed = assembler.feed
    for line in lines:
        consumed = line.end
        if docker is None:
            done = feed(line)
            if done:  # one stream, and the line that ended them pending: read on from it
                for event in done:
                    event.resume = line.start
                events += done
            continue
        # a record gives one whole line at most
        done = [event for whole in docker.feed(line) for event in feed(whole)]
        if done:
            resume = _resume(docker, assembler, consumed)
            for event in done:
                event.resume = resume
            events += done
    if consumed is None:
        return events, None
    if flush and (end is None or consumed >= end):
        tail: list[Event] = []
        if docker is not None:
            for whole in docker.flush(consumed):
                tail.extend(assembler.feed(whole))
        tail.extend(assembler.flush())
        for event in tail:
            event.resume = consumed
        events.extend(tail)
        return events, consumed
    return events, _resume(docker, assembler, consumed)


def _resume(docker: DockerRecords | None, assembler: Assembler, end: int) -> int:
    """Where to read on after ``end``: before any piece still pending."""
    start = assembler.pending_start()
    resume = end if start is None or start > end else start
    if docker is not None:
        start = docker.pending_start()
        if start is not None and start < resume:
            resume = start
    return resume
