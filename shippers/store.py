"""The shipper's durable state: the registry (file identities, acknowledged offsets, the
spool cursor) and the spool (events read but not yet acknowledged).

Offsets are committed only after acknowledgement: the registry is replaced atomically
after each acknowledged batch, together with the spool cursor. Where reading resumes is
derived from the spool itself (a file's furthest ``resume`` offset in the heads of the
complete chunks), so a crash between spooling and acknowledging re-sends spooled events
(same ids, acknowledged as duplicates) and never skips any.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from hubkeeper.files import fsync_dir, write_atomically
from hubkeeper.log import get_logger

log = get_logger(__name__)


class Unwritable(OSError):
    """A write to the state folder failed (full, over quota, read-only, I/O error); nothing
    half-written is kept: the write can be made again once the cause is gone."""

    def __init__(self, what: str, error: OSError) -> None:
        super().__init__(error.errno, f"{what}: {error.strerror or error}")
        self.what = what


Cursor = tuple[int, int]  # spool segment number, byte position in it
READ_BLOCK = 64 << 10  # the least the sender reads from a segment at once
RECORD_GUESS = 1024  # bytes of a usual record: the block read for a batch is sized by it
CAUGHT_UP_ROLL = 1 << 20  # a segment this big is closed once the sender is in it (freed when
# the sender has passed it, not only after ``segment_bytes``: a small filesystem stays free)
RESERVE_BYTES = 256 << 10  # kept beside the spool, given up when the registry cannot be saved


@dataclass
class Entry:
    """One file being shipped: how it is recognized and how far it is acknowledged."""

    key: str
    source: str
    path: str
    dev: int
    ino: int
    fp_len: int
    fp: str
    acked: int = 0
    gen: int = 0
    meta: dict[str, str] = field(default_factory=dict)


class Registry:
    """``registry.json``: entries by key and the spool cursor, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.entries: dict[str, Entry] = {}
        self.cursor: Cursor = (0, 0)
        self.dirty = False  # acknowledged but not yet written
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            self.entries = {e["key"]: Entry(**e) for e in data["entries"]}
            self.cursor = (int(data["cursor"][0]), int(data["cursor"][1]))

    def save(self) -> Cursor:
        """Write everything (atomically); returns the cursor written. A failed write
        (:class:`Unwritable`) leaves the registry dirty, to be written at the next save."""
        with self.lock:
            data = {
                "version": 1,
                "cursor": list(self.cursor),
                "entries": [asdict(entry) for entry in self.entries.values()],
            }
            try:
                write_atomically(self.path, json.dumps(data, separators=(",", ":")).encode())
            except OSError as error:
                raise Unwritable("registry", error) from error
            self.dirty = False
            return self.cursor

    def put(self, entry: Entry) -> None:
        """Add or change an entry and write the registry. A new entry must be on disk
        before any event carries its key: if the write fails, it is dropped again and the
        error raised. A change that could not be written stays dirty, for the next save."""
        with self.lock:
            new = entry.key not in self.entries
            self.entries[entry.key] = entry
            self.dirty = True
        try:
            self.save()
        except Unwritable:
            if new:
                with self.lock:
                    self.entries.pop(entry.key, None)
                raise

    def forget(self, key: str) -> None:
        """Drop an entry; written now, or (if that fails) at the next save."""
        with self.lock:
            self.entries.pop(key, None)
            self.dirty = True
        with suppress(Unwritable):
            self.save()

    def acknowledge(self, offsets: dict[str, int], cursor: Cursor) -> None:
        """Record acknowledged offsets and the cursor past them; :meth:`save` commits them
        (both in one atomic write)."""
        with self.lock:
            for key, offset in offsets.items():
                entry = self.entries.get(key)
                if entry is not None and offset > entry.acked:
                    entry.acked = offset
            self.cursor = cursor
            self.dirty = True


def index_stem(prefix: str, dataset: str) -> str:
    """What the daily indices of ``dataset`` begin with: the day follows (``2026.12.03``)."""
    return f"{prefix}-{dataset}-"


def daily_index(prefix: str, dataset: str, stamp: str) -> str:
    """The index of an event of ``dataset`` with the ISO timestamp ``stamp``."""
    return f"{index_stem(prefix, dataset)}{stamp[0:4]}.{stamp[5:7]}.{stamp[8:10]}"


# A spool segment (``segment-N.chunks``) is a run of chunks, each written by one reader
# append (an append of more than a chunk's limits writes several):
#   [count,meta_bytes,body_bytes,{"key":resume,...}]\n   the head: each file's furthest
#                                                         resume offset among the records
#   [["key",start,resume,"source"],...]\n                a record's file part each
#   {"create":{"_index":"I","_id":"D"}}\n{document}\n... the records' bulk request lines
# A sender takes whole chunks: a batch's bulk body is their bodies as they are, its offsets
# the heads' (no look at each record); the records are parsed only when an answer must be
# looked at item by item. Documents are compact JSON (no raw newline): a body has two lines
# per record.
_ACTION = re.compile(rb'\{"create":\{"_index":"([^"\\\n]*)","_id":"([^"\\\n]*)"\}\}')
_ACTION_LINE = b'{"create":{"_index":"%b","_id":"%b"}}\n'
_CREATE = _ACTION_LINE + b"%b\n"
# The reader's usual event: its document written in parts (the parsed fields' JSON without
# its closing brace, the file's fields, ``log.offset``'s value) straight into its lines.
CREATE_IN_PARTS = _ACTION_LINE + b"%b%b%d}\n"
SUFFIX = ".chunks"


@dataclass(slots=True)
class Record:
    """One spooled event: where it came from, where it goes, and its bulk request lines
    (``{"create":...}``, its JSON document), written once: the spool holds them as they are.
    The lines carry ``index`` and ``id`` too: make a changed record with :meth:`of`, never
    with ``dataclasses.replace``."""

    key: str
    start: int
    resume: int
    index: str
    id: str
    source: str
    lines: bytes

    @classmethod
    def of(
        cls, key: str, start: int, resume: int, index: str, id: str, source: str, doc: bytes
    ) -> Record:
        """The record of a JSON document (the reader's usual event writes its lines itself:
        :data:`CREATE_IN_PARTS`). Index names and ids are plain strings (hex, base64url,
        names): nothing to escape."""
        return cls(
            key, start, resume, index, id, source, _CREATE % (index.encode(), id.encode(), doc)
        )

    @property
    def doc(self) -> bytes:
        """The JSON document (the second line)."""
        return self.lines[self.lines.index(b"\n") + 1 : -1]


def bulk_body(records: Sequence[Record]) -> bytes:
    """The records as a bulk request body of ``create`` actions: a spooled batch's bodies
    as they are; others' lines joined."""
    if isinstance(records, Batch):
        return records.data
    return b"".join([record.lines for record in records])


def chunks(records: Sequence[Record], max_events: int, max_bytes: int) -> list[bytes]:
    """The spool bytes of ``records``: chunks of at most ``max_events`` records and about
    ``max_bytes`` of body (at least one record), in pieces to join (once: each record's
    lines are copied only there)."""
    parts = [r.lines for r in records]
    sizes = list(map(len, parts))
    pieces: list[bytes] = []
    for first in range(0, len(parts), max_events):
        last = min(first + max_events, len(parts))
        if sum(sizes[first:last]) > max_bytes:  # rare: long events, cut by their sizes
            start, size = first, 0
            for n in range(first, last):
                if size and size + sizes[n] > max_bytes:
                    pieces += _chunk(records, parts, start, n, size)
                    start, size = n, 0
                size += sizes[n]
            first = start
        pieces += _chunk(records, parts, first, last, sum(sizes[first:last]))
    return pieces


def _chunk(
    records: Sequence[Record], parts: list[bytes], first: int, last: int, size: int
) -> list[bytes]:
    """A chunk of ``records[first:last]`` (whose bulk lines, ``size`` bytes in all, are
    ``parts[first:last]``) in pieces."""
    some = records[first:last]
    files = orjson.dumps(
        [(r.key, r.start, r.resume, r.source) for r in some], option=orjson.OPT_APPEND_NEWLINE
    )
    head = orjson.dumps(
        [last - first, len(files), size, _furthest(some)], option=orjson.OPT_APPEND_NEWLINE
    )
    return [head, files, *parts[first:last]]


class Chunk(NamedTuple):
    count: int
    offsets: dict[str, int]
    files: bytes  # the records' file parts, as written
    body: bytes


def _head(line: bytes) -> tuple[int, int, int, dict[str, int]]:
    """A chunk's head: its count of records, the sizes of its two parts, its offsets."""
    try:
        count, files, body, offsets = orjson.loads(line)
    except (ValueError, TypeError):  # not JSON, not four values
        raise ValueError("not a spool chunk") from None
    if not (
        line.endswith(b"\n")
        and type(count) is int is type(files) is type(body)
        and count > 0 and files > 0 and body > 0
        and type(offsets) is dict
    ):  # fmt: skip
        raise ValueError("not a spool chunk")
    return count, files, body, offsets


def _records(chunk: Chunk) -> list[Record]:
    """A chunk's records (its parts checked against each other)."""
    try:
        files = orjson.loads(chunk.files)
    except ValueError:
        raise ValueError("not a spool chunk") from None
    if not (type(files) is list and len(files) == chunk.count):
        raise ValueError("not a spool chunk")
    body, records, end = chunk.body, [], 0
    for part in files:  # each record's two lines: its action, its document
        begin, action_end = end, body.find(b"\n", end)
        end = body.find(b"\n", action_end + 1) + 1
        found = _ACTION.fullmatch(body, begin, action_end) if end > action_end >= 0 else None
        if found is None or type(part) is not list or len(part) != 4:
            raise ValueError("not a spool chunk")
        key, start, resume, source = part
        if not (type(start) is int is type(resume) and type(key) is str is type(source)):
            raise ValueError("not a spool chunk")
        index, event_id = found.group(1).decode(), found.group(2).decode()
        records.append(Record(key, start, resume, index, event_id, source, body[begin:end]))
    if end != len(body):
        raise ValueError("not a spool chunk")
    return records


class Batch(Sequence[Record]):
    """Whole chunks read from the spool: the bulk body (``data``) and each file's offset
    come from their heads and bodies at once; the records themselves are parsed only
    when asked for (an answer to look at item by item, another output)."""

    def __init__(self, chunks: list[Chunk]) -> None:
        self.chunks = chunks
        self.data = chunks[0].body if len(chunks) == 1 else b"".join([c.body for c in chunks])
        self._count = sum([c.count for c in chunks])
        self._records: list[Record] | None = None

    @property
    def records(self) -> list[Record]:
        if self._records is None:
            self._records = [record for chunk in self.chunks for record in _records(chunk)]
        return self._records

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, item: Any) -> Any:
        return self.records[item]

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    @property
    def size(self) -> int:
        return len(self.data)

    def offsets(self) -> dict[str, int]:
        """Each file's furthest resume offset."""
        if len(self.chunks) == 1:
            return self.chunks[0].offsets
        return _merge(chunk.offsets for chunk in self.chunks)


class Spool:
    """A bounded on-disk queue of chunks of records in numbered segment files.

    The reader appends (and fsyncs) chunks of at most ``chunk_events`` records and about
    ``chunk_bytes``; the sender reads whole chunks from a cursor and, once a batch is
    acknowledged, moves the cursor on; segments wholly behind it are deleted. A torn last
    chunk (a crash while writing) is cut off when the spool is opened; one left by a
    failed write (a full filesystem) is cut off at once, and the next write goes where the
    last whole chunk ends.
    """

    def __init__(
        self,
        folder: Path,
        max_bytes: int,
        cursor: Cursor,
        segment_bytes: int = 16 << 20,
        chunk_events: int = 250,
        chunk_bytes: int = 1 << 20,
    ) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.chunk_events = chunk_events
        self.chunk_bytes = chunk_bytes
        self.changed = threading.Condition()
        folder.mkdir(parents=True, exist_ok=True)
        self._sizes: dict[int, int] = {}
        for path in sorted(folder.glob(f"segment-*{SUFFIX}")):
            seq = int(path.stem.split("-")[1])
            if seq < cursor[0]:
                path.unlink()
            else:
                self._sizes[seq] = _repair(path)
        self._write_seq = max(self._sizes, default=cursor[0])
        self._sizes.setdefault(self._write_seq, 0)
        self._writer = self._open(self._write_seq)
        self._released = cursor

    def _path(self, seq: int) -> Path:
        return self.folder / f"segment-{seq:012d}{SUFFIX}"

    def _open(self, seq: int) -> int:
        """The segment's descriptor for writing: unbuffered, written at known positions."""
        return os.open(self._path(seq), os.O_WRONLY | os.O_CREAT, 0o644)

    def used(self) -> int:
        """Bytes not yet acknowledged."""
        with self.changed:
            return sum(self._sizes.values()) - self._released[1]

    def full(self) -> bool:
        return self.used() >= self.max_bytes

    def end(self) -> Cursor:
        with self.changed:
            return self._write_seq, self._sizes[self._write_seq]

    def append(self, records: Sequence[Record]) -> None:
        """Write records durably (one fsync), then wake the sender. All or nothing: a
        failed write raises :class:`Unwritable` after cutting the segment back to its last
        whole chunk."""
        if not records:
            return
        data = b"".join(chunks(records, self.chunk_events, self.chunk_bytes))
        with self.changed:
            try:
                if self._roll():
                    writer = self._open(self._write_seq + 1)
                    os.close(self._writer)
                    self._writer = writer
                    self._write_seq += 1
                    self._sizes[self._write_seq] = 0
                    fsync_dir(self.folder)
                self._write(data)
            except OSError as error:
                raise Unwritable("spool", error) from error
            self.changed.notify_all()

    def _roll(self) -> bool:
        """Whether to start a new segment: the current one is full, or big and the sender
        has acknowledged everything before it."""
        size = self._sizes[self._write_seq]
        caught_up = self._released[0] == self._write_seq
        return size >= self.segment_bytes or (caught_up and size >= CAUGHT_UP_ROLL)

    def _write(self, data: bytes) -> None:
        size = self._sizes[self._write_seq]
        try:
            view = memoryview(data)
            while view:
                view = view[os.pwrite(self._writer, view, size + len(data) - len(view)) :]
            os.fsync(self._writer)
        except OSError:
            try:
                os.ftruncate(self._writer, size)  # frees the torn bytes' space
            except OSError as error:  # the next write goes over them anyway
                log.warning("spool_cut_failed", error=str(error))
            raise
        self._sizes[self._write_seq] = size + len(data)

    def read(self, cursor: Cursor, max_events: int, max_bytes: int) -> tuple[Batch, Cursor]:
        """Whole chunks from ``cursor`` on (at most ``max_events`` records and ``max_bytes``
        of body, at least one chunk), and the cursor after them; the batch is empty at the
        end of the spool."""
        taken: list[Chunk] = []
        count = total = 0
        seq, pos = cursor
        while True:
            with self.changed:
                size = self._sizes.get(seq)
                last = seq >= self._write_seq
            if size is None or pos >= size:
                if last or size is None:
                    break
                seq, pos = seq + 1, 0
                continue
            with self._path(seq).open("rb", buffering=READ_BLOCK) as handle:
                handle.seek(pos)
                while pos < size:
                    head = handle.readline(size - pos)
                    number, files, body, offsets = _head(head)
                    if taken and (count + number > max_events or total + body > max_bytes):
                        return Batch(taken), (seq, pos)
                    chunk = Chunk(number, offsets, handle.read(files), handle.read(body))
                    if len(chunk.files) != files or len(chunk.body) != body:
                        raise ValueError("not a spool chunk")  # past the end: cut short
                    taken.append(chunk)
                    count += number
                    total += body
                    pos += len(head) + files + body
        return Batch(taken), (seq, pos)

    def records(self, cursor: Cursor) -> Iterator[Record]:
        """Every record from ``cursor`` to the end."""
        while True:
            batch, cursor = self.read(cursor, 10000, 64 << 20)
            if not batch:
                return
            yield from batch

    def offsets(self, cursor: Cursor) -> dict[str, int]:
        """Each file's furthest resume offset from ``cursor`` to the end (at start-up:
        where reading resumes), from the chunks' heads."""
        found = []
        with self.changed:
            sizes = sorted((seq, size) for seq, size in self._sizes.items() if seq >= cursor[0])
        for seq, size in sizes:
            pos = cursor[1] if seq == cursor[0] else 0
            with self._path(seq).open("rb") as handle:
                while pos < size:
                    handle.seek(pos)
                    head = handle.readline(size - pos)
                    _count, files, body, offsets = _head(head)
                    found.append(offsets)
                    pos += len(head) + files + body
        return _merge(found)

    def release(self, cursor: Cursor) -> None:
        """Everything before ``cursor`` is acknowledged: delete segments wholly behind it."""
        with self.changed:
            self._released = cursor
            for seq in [s for s in self._sizes if s < cursor[0]]:
                del self._sizes[seq]
                self._path(seq).unlink(missing_ok=True)
            self.changed.notify_all()

    def wait(self, cursor: Cursor, timeout: float) -> None:
        """Sleep until something is appended past ``cursor`` (or ``timeout``)."""
        with self.changed:
            if (self._write_seq, self._sizes[self._write_seq]) == cursor:
                self.changed.wait(timeout)

    def close(self) -> None:
        with self.changed:
            os.close(self._writer)

    def keep_reserve(self) -> None:
        """Take :data:`RESERVE_BYTES` of disk in a file beside the segments if they are
        not taken already (nothing if there is no room)."""
        path = self.folder / "reserve"
        if path.exists():
            return
        try:
            with path.open("wb") as handle:
                handle.write(bytes(RESERVE_BYTES))
        except OSError:
            path.unlink(missing_ok=True)

    def give_up_reserve(self) -> bool:
        """Free the reserve's space; whether there was any."""
        try:
            (self.folder / "reserve").unlink()
        except FileNotFoundError:
            return False
        return True


def commit(registry: Registry, spool: Spool) -> Cursor:
    """Save the registry, then delete the spool's segments behind its cursor. If the save
    fails, once more with the spool's reserve given up: a spool that has filled its own
    filesystem frees space only after a save. Raises :class:`Unwritable` if that fails too."""
    try:
        cursor = registry.save()
    except Unwritable:
        with spool.changed:  # no append takes the space meanwhile
            if not spool.give_up_reserve():
                raise
            cursor = registry.save()
    spool.release(cursor)
    spool.keep_reserve()
    return cursor


def upgrade_spool(
    folder: Path, registry: Registry, chunk_events: int = 250, chunk_bytes: int = 1 << 20
) -> None:
    """Rewrite the segments of earlier spool formats from the registry's cursor on into
    segments of chunks, each under its own number: ``segment-N.jsonl`` (a line per record:
    ``["key",start,resume,"index","id","source"]``, a tab, the document) and
    ``segment-N.spool`` (a record's bulk lines, the file part after a tab at the end of the
    second: ``{"create":...}\\n{document}\\t["key",start,resume,"source"]\\n``). The
    cursor's segment goes first and the cursor is pointed at its start; each step can be
    repeated after a crash (an old segment goes once its new one is written): at worst
    records are sent again, answered as duplicates."""
    old = {path: int(path.stem.split("-")[1]) for path in folder.glob("segment-*.jsonl")}
    old |= {path: int(path.stem.split("-")[1]) for path in folder.glob("segment-*.spool")}
    seq, pos = registry.cursor
    converted = 0
    for path in sorted(old, key=lambda p: (old[p] != seq, old[p])):
        number = old[path]
        if number >= seq:
            data = path.read_bytes()[pos if number == seq else 0 :]
            parse = _jsonl_records if path.suffix == ".jsonl" else _spool_records
            records = list(parse(data))
            new = b"".join(chunks(records, chunk_events, chunk_bytes))
            write_atomically(folder / f"segment-{number:012d}{SUFFIX}", new)
            converted += len(records)
            if number == seq and pos:
                registry.cursor = (seq, 0)
                registry.save()
        path.unlink()
    if old:
        log.info("spool_upgraded", records=converted)


def _jsonl_records(data: bytes) -> Iterator[Record]:
    """The records of a segment of the first format, up to a torn or unreadable one."""
    for line in data.splitlines():
        meta, _tab, doc = line.partition(b"\t")
        try:
            key, start, resume, index, event_id, source = orjson.loads(meta)
        except (ValueError, TypeError):
            return
        yield Record.of(key, start, resume, index, event_id, source, doc)


def _spool_records(data: bytes) -> Iterator[Record]:
    """The records of a segment of the second format, up to a torn or unreadable one."""
    start = 0
    while (tab := data.find(b"\t", start)) >= 0 and (end := data.find(b"\n", tab) + 1):
        try:
            yield spool_record(data[start:end])
        except ValueError:
            return
        start = end


def spool_record(line: bytes) -> Record:
    """A record of the second spool format from its bytes (with or without the final
    newline)."""
    action = _ACTION.match(line)
    doc, tab, trailer = line[action.end() + 1 if action else 0 :].rstrip(b"\n").rpartition(b"\t")
    if action is None or line[action.end() : action.end() + 1] != b"\n" or not tab:
        raise ValueError("not a spool record")
    try:
        key, start, resume, source = orjson.loads(trailer)
    except (ValueError, TypeError):  # not JSON, not four values
        raise ValueError("not a spool record") from None
    if not (type(start) is int is type(resume) and type(key) is str is type(source)):
        raise ValueError("not a spool record")
    index, event_id = action.group(1).decode(), action.group(2).decode()
    return Record.of(key, start, resume, index, event_id, source, doc)


def _repair(path: Path) -> int:
    """Cut a torn or unreadable tail off a segment; return its good size."""
    data = path.read_bytes()
    good = 0
    while good < len(data):
        line_end = data.find(b"\n", good) + 1
        try:
            count, files, body, offsets = _head(data[good:line_end] if line_end else b"")
            end = line_end + files + body
            if end > len(data):
                raise ValueError("a torn chunk")
            parts = data[line_end : line_end + files], data[line_end + files : end]
            records = _records(Chunk(count, offsets, *parts))
        except ValueError:
            break
        if offsets != _furthest(records):
            break
        good = end
    if good != len(data):
        log.warning("spool_repaired", segment=path.name, kept=good, cut=len(data) - good)
        with path.open("r+b") as handle:
            handle.truncate(good)
    return good


def _furthest(records: Sequence[Record]) -> dict[str, int]:
    """Each file's furthest resume offset among ``records``."""
    offsets: dict[str, int] = {}
    for record in records:
        if record.resume > offsets.get(record.key, -1):
            offsets[record.key] = record.resume
    return offsets


def _merge(offsets: Iterable[dict[str, int]]) -> dict[str, int]:
    """Each file's furthest offset in any of ``offsets``."""
    merged: dict[str, int] = {}
    for part in offsets:
        for key, resume in part.items():
            if resume > merged.get(key, -1):
                merged[key] = resume
    return merged
