"""Log files found by glob, recognized across rotation, read into spool records.

A file is identified by device, inode and a fingerprint of its first bytes (a file
shorter than ``fingerprint_bytes`` is fingerprinted whole, and the fingerprint grows with
it). Each scan:

1. checks every open file: shorter than what was read, or its first bytes changed, means it
   was truncated (copytruncate) or overwritten: its entry is set loose;
2. gives every loose entry (all of them at start-up) the file that carries its content:
   the same inode first, else any file whose first bytes match (the copy made by
   copytruncate, a file renamed to a new inode);
3. starts a new entry for every other file, except a copy of a file still being read
   (copytruncate between copy and truncate), which waits for the next scan.

A renamed file keeps its inode and its open descriptor, so it is read to its end even
after it left the glob; a file that is gone is closed once read to the end and quiet for
``close_inactive`` seconds. User-server containers' json-file logs are files too, decoded
by :class:`shippers.framing.DockerRecords` and enriched with the container's labels.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
import time
from collections import Counter as Counts
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from hubkeeper.backoff import full_jitter
from hubkeeper.config import ShipperSource
from hubkeeper.log import get_logger
from hubkeeper.redact import DEFAULT, Redactor
from hubkeeper.shippers.ecs import ECS_VERSION
from hubkeeper.shippers.framing import (
    FAILURE,
    Assembler,
    DockerRecords,
    Event,
    decode,
    events_from,
    raw,
    read_lines,
)
from hubkeeper.shippers.parsers import (
    STAMP_FRACTIONS,
    NginxAccessParser,
    Parser,
    make_parser,
    normalize_timestamp,
    now_iso,
    to_json,
    valid_timestamp,
)
from hubkeeper.shippers.store import (
    CREATE_IN_PARTS,
    Entry,
    Record,
    Registry,
    daily_index,
    index_stem,
)

try:
    from hubkeeper.shippers import _native
except ImportError:  # built without its native part: the Python path alone
    _native = None

log = get_logger(__name__)

ContainerInfo = Callable[[str], dict[str, str] | None]
TIMESTAMP_INVALID = "timestamp_invalid"  # tag: the line's time is no real instant
TIMESTAMP_ORIGINAL = "hubkeeper.timestamp_original"  # that time as written (@timestamp: read)
ENCODE_ERROR = "encode_error"  # the parsed document could not be written: shipped raw
RETRY_FIRST, RETRY_MAX = 1.0, 60.0  # backoff before a file that failed is read again, s
FAST_WINDOW_MIN = 4 << 10  # bytes: the native fast path's smallest window


ID_KEY_CHARS = 16  # of the file's entry key that begin its events' ids


def event_id(key: str, start: int) -> str:
    """The deterministic ``_id`` of the event at ``start`` in the file ``key``: the key's
    first 64 bits and the offset, zero-padded hex. A file's ids share their prefix and
    grow with its offsets, so Elasticsearch's check that an id is new skips the segments
    whose range of ids does not hold it (random ids fall in every segment's range); and
    a format costs a third of a hash."""
    return f"{key[:ID_KEY_CHARS]}{start:012x}"


def entry_key(source: str, dev: int, ino: int, gen: int, fp: str) -> str:
    return hashlib.sha256(f"{source}\0{dev}\0{ino}\0{gen}\0{fp}".encode()).hexdigest()[:32]


def fingerprint(fd: int, length: int) -> str:
    return hashlib.sha256(os.pread(fd, length, 0)).hexdigest()


@dataclass
class Source:
    """A configured source with its parser."""

    config: ShipperSource
    parser: Parser
    patterns: list[str]

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def docker(self) -> bool:
        return self.config.type == "docker"


@dataclass
class Tail:
    """An open file being read for an entry."""

    entry: Entry
    source: Source
    fd: int
    pos: int
    size: int = 0
    grew_at: float = field(default_factory=time.monotonic)
    seen: deque[tuple[int, float]] = field(default_factory=deque)  # (size, when first seen)
    stalled: tuple[int, int] | None = None  # (size, resume) when only a pending piece is left
    emitted: set[int] = field(default_factory=set)
    in_glob: bool = True
    error: str | None = None  # why the last read failed (None: it did not)
    failures: int = 0  # reads failed in a row
    retry_at: float = 0.0  # monotonic time before which a failed file is not read

    def lag_seconds(self, now: float) -> float:
        """How long the oldest unacknowledged byte has been in the file (since it was
        first seen here)."""
        acked = self.entry.acked
        for size, when in list(self.seen):
            if size > acked:
                return now - when
        return 0.0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(slots=True)
class _Common:
    """What every event read from one file in one go has in common."""

    tail: Tail
    name: str
    key: str
    dataset: str | None  # configured, or ``container``: else each event's own
    parser_dataset: str
    fields: dict[str, str]  # the ECS fields of the source and the file
    meta: dict[str, str]
    # ``fields`` and ``log.offset``'s key as the end of a document's JSON (``,"service.name":
    # ...,"log.offset":``), written once for the file's events; None if they cannot be.
    tail_json: bytes | None
    plain: bool  # ``tail_json`` ends its events' documents (no labels, JSON can carry the path)

    @classmethod
    def of(cls, tail: Tail, host_name: str) -> _Common:
        source, entry = tail.source, tail.entry
        fields = {
            "service.name": source.config.service or source.name,
            "ecs.version": ECS_VERSION,
            "host.name": host_name,
            "log.file.path": entry.path,
        }
        dataset = source.config.dataset or ("container" if source.docker else None)
        try:
            tail_json: bytes | None = b',%b,"log.offset":' % orjson.dumps(fields)[1:-1]
        except TypeError:  # a path with a character JSON cannot carry
            tail_json = None
        return cls(
            tail, source.name, entry.key, dataset,
            source.parser.dataset, fields, entry.meta, tail_json,
            tail_json is not None and not entry.meta,
        )  # fmt: skip


@dataclass
class Settings:
    fingerprint_bytes: int = 1024
    max_event_bytes: int = 1 << 20
    read_window: int = 64 << 10  # bytes of a file read and parsed at once
    multiline_timeout: float = 1.0
    close_inactive: float = 300.0
    host_name: str = ""
    index_prefix: str = "hubkeeper-logs"
    redactor: Redactor = DEFAULT


class Files:
    """Every file of every source: discovery, identity, reading into records."""

    def __init__(
        self,
        sources: list[Source],
        registry: Registry,
        settings: Settings,
        spooled: dict[str, int],
        container_info: ContainerInfo | None = None,
    ) -> None:
        self.sources = sources
        self.registry = registry
        self.settings = settings
        self.container_info = container_info
        self.tails: dict[str, Tail] = {}
        self.finished: dict[str, int] = {}  # closed entries waiting for acknowledgement
        self.ignored: set[tuple[int, int]] = set()  # containers that are not user servers
        # Lines shipped raw or repaired, by (source, reason); files whose read failed.
        self.line_failures: Counts[tuple[str, str]] = Counts()
        self.read_failures: Counts[str] = Counts()
        self.unopened: dict[str, tuple[str, str]] = {}  # path: source, why it cannot be opened
        self._indices: dict[str, dict[str, str]] = {}  # dataset: second: daily index
        # Where each known entry resumes: past what the spool already holds.
        self._loose: dict[str, int] = {
            key: max(entry.acked, spooled.get(key, 0)) for key, entry in registry.entries.items()
        }

    # --- discovery ---------------------------------------------------------------------

    def _candidates(self) -> dict[tuple[int, int], tuple[Source, str, int]]:
        found: dict[tuple[int, int], tuple[Source, str, int]] = {}
        for source in self.sources:
            for pattern in source.patterns:
                for path in sorted(glob.glob(pattern)):
                    name = os.path.basename(path)
                    if any(fnmatch.fnmatch(name, ex) for ex in source.config.exclude):
                        continue
                    try:
                        st = os.stat(path)
                    except OSError:
                        continue
                    if os.path.isfile(path):
                        found.setdefault((st.st_dev, st.st_ino), (source, path, st.st_size))
        return found

    def scan(self) -> None:
        candidates = self._candidates()
        paths = {path for _source, path, _size in candidates.values()}
        self.unopened = {p: why for p, why in self.unopened.items() if p in paths}
        claimed: set[tuple[int, int]] = set()
        now = time.monotonic()
        for key, tail in list(self.tails.items()):
            st = os.fstat(tail.fd)
            ident = (st.st_dev, st.st_ino)
            if not self._intact(tail, st.st_size):
                continue
            found = candidates.get(ident)
            tail.in_glob = found is not None and found[0] is tail.source
            if tail.in_glob:
                claimed.add(ident)
                tail.entry.path = found[1] if found else tail.entry.path
                self._grow_fingerprint(tail, st.st_size)
            elif tail.pos >= st.st_size and now - tail.grew_at >= self.settings.close_inactive:
                log.info("file_closed", source=tail.source.name, path=tail.entry.path)
                tail.close()
                del self.tails[key]
                self.finished[key] = tail.pos
        by_source = {source.name: source for source in self.sources}
        for key, pos in list(self._loose.items()):
            entry = self.registry.entries.get(key)
            source = by_source.get(entry.source) if entry else None
            if entry is None or source is None:
                del self._loose[key]
                continue
            match = self._rebind(entry, source, candidates, claimed)
            del self._loose[key]
            if match is None:
                log.warning("file_lost", source=entry.source, path=entry.path, read=pos)
                self.finished[key] = pos
                continue
            ident, path, fd = match
            claimed.add(ident)
            if (entry.dev, entry.ino) != ident:
                log.info("file_moved", source=entry.source, old=entry.path, new=path)
            entry.path, (entry.dev, entry.ino) = path, ident
            self.registry.put(entry)
            self.tails[key] = Tail(entry, source, fd, pos)
        for ident, (source, path, size) in candidates.items():
            if ident not in claimed and ident not in self.ignored and size > 0:
                self._start(ident, source, path)
        for key in [k for k, pos in self.finished.items() if self._acknowledged(k, pos)]:
            del self.finished[key]
            if key not in self.tails:
                self.registry.forget(key)

    def _acknowledged(self, key: str, pos: int) -> bool:
        entry = self.registry.entries.get(key)
        return entry is None or entry.acked >= pos

    def _intact(self, tail: Tail, size: int) -> bool:
        """Whether the open file still holds what was read; if not, set its entry loose."""
        entry = tail.entry
        if (
            size >= tail.pos
            and size >= entry.fp_len
            and fingerprint(tail.fd, entry.fp_len) == entry.fp
        ):
            return True
        log.info("file_truncated", source=entry.source, path=entry.path, read=tail.pos, size=size)
        tail.close()
        del self.tails[entry.key]
        self._loose[entry.key] = tail.pos
        return False

    def _grow_fingerprint(self, tail: Tail, size: int) -> None:
        entry = tail.entry
        if entry.fp_len < self.settings.fingerprint_bytes and size > entry.fp_len:
            entry.fp_len = min(size, self.settings.fingerprint_bytes)
            entry.fp = fingerprint(tail.fd, entry.fp_len)
            self.registry.put(entry)

    def _rebind(
        self,
        entry: Entry,
        source: Source,
        candidates: dict[tuple[int, int], tuple[Source, str, int]],
        claimed: set[tuple[int, int]],
    ) -> tuple[tuple[int, int], str, int] | None:
        """The file now carrying ``entry``'s content: its inode first, else a copy."""
        same = (entry.dev, entry.ino)
        order = sorted(candidates, key=lambda ident: ident != same)
        for ident in order:
            found_source, path, size = candidates[ident]
            if ident in claimed or found_source is not source or size < entry.fp_len:
                continue
            try:
                fd = _open(path, ident)
            except OSError:
                fd = None  # not this one; _start reports a file that cannot be opened
            if fd is None:
                continue
            if fingerprint(fd, entry.fp_len) == entry.fp:
                return ident, path, fd
            os.close(fd)
        return None

    def _start(self, ident: tuple[int, int], source: Source, path: str) -> None:
        try:
            fd = _open(path, ident)
        except OSError as error:  # tried again at every scan, reported until it opens
            if path not in self.unopened:
                log.warning("file_open_failed", source=source.name, path=path, error=str(error))
                self.read_failures[source.name] += 1
            self.unopened[path] = (source.name, f"{type(error).__name__}: {error}"[:300])
            return
        self.unopened.pop(path, None)
        if fd is None:
            return
        length = min(os.fstat(fd).st_size, self.settings.fingerprint_bytes)
        fp = fingerprint(fd, length)
        if self._copy_of_open_file(source, fp, length):
            os.close(fd)  # copytruncate's copy (or a copy in progress): wait for the truncation
            return
        meta: dict[str, str] = {}
        if source.docker:
            try:
                info = self._container(path)
            except Exception as error:  # the engine did not answer: try again next scan
                log.warning("container_lookup_failed", path=path, error=type(error).__name__)
                os.close(fd)
                return
            if info is None:
                os.close(fd)
                self.ignored.add(ident)
                return
            meta = info
        gen = 1 + max(
            (e.gen for e in self.registry.entries.values() if (e.dev, e.ino) == ident), default=-1
        )
        key = entry_key(source.name, *ident, gen, fp)
        entry = Entry(key, source.name, path, *ident, length, fp, gen=gen, meta=meta)
        try:
            self.registry.put(entry)  # durable before any event carries its key
        except OSError:  # the state folder is full: opened again at a later scan
            os.close(fd)
            raise
        log.info("file_opened", source=source.name, path=path)
        self.tails[key] = Tail(entry, source, fd, 0)

    def _copy_of_open_file(self, source: Source, fp: str, length: int) -> bool:
        """Whether the first ``length`` bytes of a new file are those of a file being read."""
        for tail in self.tails.values():
            if tail.source is source and os.fstat(tail.fd).st_size >= length:
                if tail.entry.fp_len == length:
                    same = tail.entry.fp == fp
                else:
                    same = fingerprint(tail.fd, length) == fp
                if same:
                    return True
        return False

    def _container(self, path: str) -> dict[str, str] | None:
        if self.container_info is None:
            return None
        return self.container_info(Path(path).parent.name)

    # --- reading -----------------------------------------------------------------------

    def read(
        self, budget: int, final: bool = False
    ) -> tuple[list[Record], list[tuple[Tail, int, set[int]]]]:
        """Records from every file (about ``budget`` bytes of input in all), and each
        file's new position, to apply once the records are durable. ``final``: nothing
        more will be written (``--once``): a last line without its newline and a pending
        multi-line event are taken as they are.

        A file whose read fails (an I/O error, anything not about one line) is skipped,
        read again after a growing pause, and reported (:meth:`failing`); the other
        files go on. A line that cannot be parsed or written fails alone (:meth:`_record`).
        """
        records: list[Record] = []
        moves: list[tuple[Tail, int, set[int]]] = []
        now = time.monotonic()
        tails = list(self.tails.values())
        share = budget // max(len(tails), 1)  # each file's, so that a backlog takes no turn
        for tail in tails:
            if budget <= 0:
                break
            if tail.retry_at > now:
                continue
            try:
                read = self._read(tail, now, final, min(share, budget))
            except Exception as error:
                self._failed(tail, error, now)
                continue
            if tail.error is not None:
                log.info("file_read_again", source=tail.source.name, path=tail.entry.path)
                tail.error, tail.failures = None, 0
            if read is not None:
                tail_records, move = read
                records.extend(tail_records)
                moves.append(move)
                budget -= move[1] - tail.pos
        return records, moves

    def _read(
        self, tail: Tail, now: float, final: bool, budget: int
    ) -> tuple[list[Record], tuple[Tail, int, set[int]]] | None:
        """One file's new records (about ``budget`` bytes of it) and its move; None when
        there is nothing to read."""
        size = os.fstat(tail.fd).st_size
        if size != tail.size:
            tail.size, tail.grew_at = size, now
            tail.seen.append((size, now))
            if len(tail.seen) > 1000:  # a long outage: keep the oldest and the newest
                tail.seen = deque([tail.seen[0], *list(tail.seen)[500:]])
        while tail.seen and tail.seen[0][0] <= tail.entry.acked:
            tail.seen.popleft()
        if size <= tail.pos:
            return None
        quiet = final or now - tail.grew_at >= self.settings.multiline_timeout
        if tail.stalled == (size, tail.pos) and not quiet:
            return None  # only a pending piece is left and nothing new came
        if not self._intact(tail, size):
            return None
        common = _Common.of(tail, self.settings.host_name)
        pos, emitted, records = tail.pos, tail.emitted, []
        window, consumed = self.settings.read_window, False
        # Window by window, so that what is read is parsed and serialized while it is still
        # in the CPU's caches (a quarter faster than 2 MiB at once); a window without a
        # complete event (a long one) is read again up to the file's end.
        fast_window = window
        fast = (  # the native fast path's kind of file (see _fast_events)
            _native is not None and common.plain and type(tail.source.parser) is NginxAccessParser
        )
        while True:  # one window at least, then more while the budget lasts
            limit = min(size, pos + window)
            if fast and not emitted:
                # Each call looks through its window for the next usual line: where unusual
                # lines come often, windows shrink; they grow back after. One with no usual
                # line in it (a long unusual one) is looked through whole before the Python
                # path takes it all.
                fast_limit = min(limit, pos + fast_window)
                fast_records, resume, until = self._fast_events(
                    common, pos, size, fast_limit, quiet
                )
                if resume == pos and until is None and fast_limit < limit:
                    fast_records, resume, until = self._fast_events(common, pos, size, limit, quiet)
                if until:
                    fast_window = max(FAST_WINDOW_MIN, fast_window // 4)
                else:
                    fast_window = min(window, 2 * fast_window)
                if resume > pos:
                    consumed = True
                    records += fast_records
                    budget -= resume - pos
                    pos = resume
                    if pos >= size or budget <= 0:
                        break
                    continue
                limit = min(limit, until or limit)  # the fast path reads on from there
            events, resume = self._events(tail, pos, size, limit, quiet, final)
            if limit < size and (resume is None or resume == pos):
                limit = size
                events, resume = self._events(tail, pos, size, size, quiet, final)
            if resume is None:
                break
            consumed = True
            records += [self._record(common, e) for e in events if e.start not in emitted]
            emitted = {e.start for e in events if e.start >= resume} | {
                s for s in emitted if s >= resume
            }
            budget -= resume - pos
            progressed, pos = resume > pos, resume
            if not progressed or pos >= size or budget <= 0:
                break
        if not consumed:
            tail.stalled = (size, tail.pos)
            return None
        # No progress: only a pending piece is left; wait for more bytes or for quiet.
        tail.stalled = (size, pos) if pos == tail.pos else None
        return records, (tail, pos, emitted)

    def _failed(self, tail: Tail, error: Exception, now: float) -> None:
        tail.failures += 1
        pause = full_jitter(tail.failures, RETRY_FIRST, RETRY_MAX)
        tail.retry_at = now + pause
        tail.error = f"{type(error).__name__}: {error}"[:300]
        self.read_failures[tail.source.name] += 1
        log.warning(
            "file_read_failed", source=tail.source.name, path=tail.entry.path,
            error=tail.error, retry_in=round(pause, 1),
        )  # fmt: skip

    def failing(self) -> dict[str, str]:
        """Sources with a file that cannot be opened or whose last read failed, and why
        (one file each)."""
        failing = {source: f"{path}: {why}" for path, (source, why) in self.unopened.items()}
        for tail in list(self.tails.values()):
            if tail.error is not None:
                failing[tail.source.name] = f"{tail.entry.path}: {tail.error}"
        return failing

    def _events(
        self, tail: Tail, start: int, size: int, limit: int, flush: bool, final: bool
    ) -> tuple[list[Event], int | None]:
        """The events of the file's lines from ``start`` up to ``limit`` (at most
        ``size``): a pending event is flushed only at the file's end."""
        settings = self.settings
        lines = read_lines(
            lambda offset, length: os.pread(tail.fd, length, offset),
            start,
            limit,
            settings.max_event_bytes,
            settings.read_window,
            final and limit == size,
            None if tail.source.docker else settings.redactor.screen,  # JSON escapes hide words
        )
        docker = DockerRecords(settings.max_event_bytes) if tail.source.docker else None
        assembler = Assembler(
            tail.source.parser, settings.max_event_bytes, plain=tail.source.docker
        )
        return events_from(lines, docker, assembler, flush, size)

    def _fast_events(
        self, common: _Common, pos: int, size: int, limit: int, flush: bool
    ) -> tuple[list[Record], int, int | None]:
        """The native fast path over the window ``pos``-``limit`` of an NGINX access log:
        the records of its usual lines from ``pos`` on, where to read on, and how far the
        Python path should read from there (None: a window)."""
        assert _native is not None and common.tail_json is not None
        settings = self.settings
        dataset = common.dataset or common.parser_dataset
        events, resume, until = _native.access_events(
            os.pread(common.tail.fd, limit - pos, pos),
            [probe.encode() for probe in settings.redactor.probes], pos, size, flush,
            settings.max_event_bytes, common.key[:ID_KEY_CHARS], common.tail_json,
            index_stem(settings.index_prefix, dataset), orjson.dumps(dataset),
        )  # fmt: skip
        key, name = common.key, common.name
        return [Record(key, start, end, index, id_, name, lines)
                for start, end, index, id_, lines in events], resume, until  # fmt: skip

    def _record(self, common: _Common, event: Event) -> Record:
        """The spool record of an event; one that cannot be written as parsed is shipped
        raw, as its bytes in the file (``encode_error``)."""
        try:
            return self._document(common, event)
        except Exception:
            length = min(event.end - event.start, self.settings.max_event_bytes)
            text, tags = decode(os.pread(common.tail.fd, length, event.start).rstrip(b"\n"))
            event.doc, event.text, event.tags = raw(text, ENCODE_ERROR), text, tags
            event.clean = False
            return self._document(common, event)

    def _document(self, common: _Common, event: Event) -> Record:
        doc = event.doc
        tags = [*doc.get("tags", ()), *event.tags] if "tags" in doc or event.tags else None
        given = stamp = doc.get("@timestamp")
        if stamp is None and event.time:  # a Docker json-file record's time
            stamp = normalize_timestamp(event.time)
        dataset = common.dataset or doc.get("event.dataset") or common.parser_dataset
        index = self._index(dataset, stamp)
        if index is None:  # no time, or none that is a real instant
            if stamp is not None:
                doc[TIMESTAMP_ORIGINAL] = str(stamp)[:256]
                tags = [*(tags or ()), TIMESTAMP_INVALID]
            stamp = now_iso()
            index = self._index(dataset, stamp)
        if stamp is not given:  # (the usual event's own time is where it belongs already)
            doc["@timestamp"] = stamp
        doc["event.dataset"] = dataset
        # Secrets come from the text read (the other fields are the shipper's own): one
        # look at it, and most lines pass (those screened clean as they were read at once).
        masked = not event.clean and self.settings.redactor.suspect(event.text)
        doc_id = event_id(common.key, event.start)
        if tags or event.stream or masked or not common.plain:
            doc.update(common.fields)
            doc["log.offset"] = event.start
            if tags:
                doc["tags"] = tags
            if event.stream:
                doc["hubkeeper.stream"] = event.stream
            if common.meta:
                doc.update(common.meta)  # the container's labels: a user server cannot forge them
            if masked:
                doc = self.settings.redactor.value(doc)
            record = Record.of(
                common.key, event.start, event.resume, index, doc_id, common.name, to_json(doc)
            )
            if FAILURE in doc:  # (only a document with tags can have either)
                self.line_failures[common.name, doc[FAILURE]] += 1
            if TIMESTAMP_ORIGINAL in doc:
                self.line_failures[common.name, TIMESTAMP_INVALID] += 1
        else:  # the usual event: its lines written at once, the file's fields appended as
            # JSON written once for them all
            lines = CREATE_IN_PARTS % (
                index.encode(), doc_id.encode(), to_json(doc)[:-1], common.tail_json,
                event.start,
            )  # fmt: skip
            record = Record(
                common.key, event.start, event.resume, index, doc_id, common.name, lines
            )
        return record

    def _index(self, dataset: str, stamp: object) -> str | None:
        """The daily index of an event of ``dataset`` at ``stamp``; None unless ``stamp`` is
        a real instant (:func:`valid_timestamp`). Kept by second: a later time in a second
        already seen needs only its fraction looked at."""
        seconds = self._indices.get(dataset)
        if seconds is None:
            seconds = self._indices[dataset] = {}
        if type(stamp) is str and stamp[19:] in STAMP_FRACTIONS:
            index = seconds.get(stamp[:19])
            if index is not None:
                return index
        if not valid_timestamp(stamp):
            return None
        if len(seconds) > 10000:
            seconds.clear()
        index = seconds[stamp[:19]] = daily_index(self.settings.index_prefix, dataset, stamp)
        return index

    def advance(self, moves: list[tuple[Tail, int, set[int]]]) -> None:
        for tail, resume, emitted in moves:
            tail.pos, tail.emitted = resume, emitted

    def close(self) -> None:
        for tail in self.tails.values():
            tail.close()
        self.tails.clear()


def _open(path: str, ident: tuple[int, int]) -> int | None:
    """Open ``path`` if it still is the inode ``ident`` (None: it is gone, or another
    file now); an error other than its absence (permission, I/O) is raised."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != ident:
        os.close(fd)
        return None
    return fd


DEFAULT_DOCKER_ROOT = "/var/lib/docker"


def container_logs(docker_root: str | None) -> list[str]:
    """Where an engine with this data root keeps its containers' json-file logs."""
    return [f"{docker_root or DEFAULT_DOCKER_ROOT}/containers/*/*-json.log*"]


def make_sources(configs: list[ShipperSource], docker_root: str | None) -> list[Source]:
    sources = []
    for config in configs:
        patterns = list(config.paths)
        if config.type == "docker" and not patterns:
            patterns = container_logs(docker_root)
        sources.append(Source(config, make_parser(config.parser, config.timezone), patterns))
    return sources


def use_docker_root(sources: list[Source], docker_root: str) -> None:
    """Point the container sources without paths of their own at this engine data root
    (learnt late: the engine did not answer when the shipper started)."""
    for source in sources:
        if source.docker and not source.config.paths:
            source.patterns = container_logs(docker_root)
