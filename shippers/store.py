"""The shipper's durable state: the registry (file identities, acknowledged offsets, the
spool cursor) and the spool (events read but not yet acknowledged).

Offsets are committed only after acknowledgement: the registry is replaced atomically
after each acknowledged batch, together with the spool cursor. Where reading resumes is
derived from the spool itself (the ``resume`` offset of the last complete record of a
file), so a crash between spooling and acknowledging re-sends spooled events (same ids,
acknowledged as duplicates) and never skips any.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

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


def daily_index(prefix: str, dataset: str, stamp: str) -> str:
    """The index of an event of ``dataset`` with the ISO timestamp ``stamp``."""
    return f"{prefix}-{dataset}-{stamp[0:4]}.{stamp[5:7]}.{stamp[8:10]}"


# A spool record is its bulk request's two lines, the file's part after a tab at the end:
# ``{"create":{"_index":"I","_id":"D"}}\n{document}\t["key",start,resume,"source"]\n``.
# Documents are compact JSON, which has no raw tab or newline, so the sender's bulk body
# is the spooled bytes with each tab-to-newline cut out (no re-serializing), cut where the
# spool read found each record's tab.
_ACTION = re.compile(rb'\{"create":\{"_index":"([^"\\\n]*)","_id":"([^"\\\n]*)"\}\}\n')


@dataclass(slots=True)
class Record:
    """One spooled event: where it came from, where it goes, and its JSON document."""

    key: str
    start: int
    resume: int
    index: str
    id: str
    source: str
    doc: bytes
    size: int = 0

    def line(self) -> bytes:
        # Every string here is plain (hex key, index name, base64url id, source name).
        return b'{"create":{"_index":"%b","_id":"%b"}}\n%b\t["%b",%d,%d,"%b"]\n' % (
            self.index.encode(), self.id.encode(), self.doc, self.key.encode(), self.start,
            self.resume, self.source.encode(),
        )  # fmt: skip

    @classmethod
    def parse(cls, line: bytes) -> Record:
        """A record from its spool bytes (with or without the final newline)."""
        action = _ACTION.match(line)
        doc, tab, trailer = line[action.end() if action else 0 :].rstrip(b"\n").rpartition(b"\t")
        if action is None or not tab:
            raise ValueError("not a spool record")
        try:
            key, start, resume, source = orjson.loads(trailer)
        except (ValueError, TypeError):  # not JSON, not four values
            raise ValueError("not a spool record") from None
        if not (type(start) is int is type(resume) and type(key) is str is type(source)):
            raise ValueError("not a spool record")
        index, event_id = action.group(1).decode(), action.group(2).decode()
        return cls(key, start, resume, index, event_id, source, doc, len(line))


def bulk_body(records: Sequence[Record]) -> bytes:
    """The records as a bulk request body of ``create`` actions: a spooled batch as its
    bytes are, each tab-to-newline cut out; others written out (index names and ids are
    plain: nothing to escape)."""
    if isinstance(records, Batch):
        data, start, pieces = records.data, 0, []
        for tab, end in records.marks:
            pieces.append(data[start:tab])
            start = end
        pieces.append(b"")
        return b"\n".join(pieces)
    return b"".join(
        b'{"create":{"_index":"%b","_id":"%b"}}\n%b\n'
        % (record.index.encode(), record.id.encode(), record.doc)
        for record in records
    )


def _record_marks(data: bytes, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Where each complete record in ``data[start:end]`` has its tab and where it ends."""
    while True:
        tab = data.find(b"\t", start, end)
        stop = data.find(b"\n", tab, end) + 1 if tab >= 0 else 0
        if stop == 0:
            return
        yield tab, stop
        start = stop


class Batch(Sequence[Record]):
    """Records read from the spool, kept as the bytes they are there (``marks``: each
    one's tab and end): the bulk body and each file's offset come from them at once; the
    records themselves are parsed only when asked for (an answer to look at item by item,
    another output)."""

    def __init__(self, data: bytes, marks: list[tuple[int, int]] | None = None) -> None:
        self.data = data
        self.marks = list(_record_marks(data, 0, len(data))) if marks is None else marks
        self._records: list[Record] | None = None

    @property
    def records(self) -> list[Record]:
        if self._records is None:
            ends = [0, *(end for _tab, end in self.marks)]
            self._records = [Record.parse(self.data[a:b]) for a, b in pairwise(ends)]
        return self._records

    def __len__(self) -> int:
        return len(self.marks)

    def __getitem__(self, item: Any) -> Any:
        return self.records[item]

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    @property
    def size(self) -> int:
        return len(self.data)

    def offsets(self) -> dict[str, int]:
        """Each file's furthest resume offset (from each record's ``["key",start,resume,``)."""
        data, offsets = self.data, {}
        for tab, end in self.marks:
            key, _, rest = data[tab + 3 : end].partition(b'",')
            resume = int(rest.split(b",", 2)[1])
            if resume > offsets.get(key, -1):
                offsets[key] = resume
        return {key.decode(): resume for key, resume in offsets.items()}


class Spool:
    """A bounded on-disk queue of records in numbered segment files.

    The reader appends (and fsyncs); the sender reads from a cursor and, once a batch is
    acknowledged, moves the cursor on; segments wholly behind it are deleted. A torn last
    record (a crash while writing) is cut off when the spool is opened; one left by a
    failed write (a full filesystem) is cut off at once, and the next write goes where the
    last whole record ends.
    """

    def __init__(
        self, folder: Path, max_bytes: int, cursor: Cursor, segment_bytes: int = 16 << 20
    ) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.changed = threading.Condition()
        folder.mkdir(parents=True, exist_ok=True)
        self._sizes: dict[int, int] = {}
        for path in sorted(folder.glob("segment-*.spool")):
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
        return self.folder / f"segment-{seq:012d}.spool"

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

    def append(self, lines: list[bytes]) -> None:
        """Write records durably (one fsync), then wake the sender. All or nothing: a
        failed write raises :class:`Unwritable` after cutting the segment back to its last
        whole record."""
        if not lines:
            return
        with self.changed:
            try:
                if self._roll():
                    writer = self._open(self._write_seq + 1)
                    os.close(self._writer)
                    self._writer = writer
                    self._write_seq += 1
                    self._sizes[self._write_seq] = 0
                    fsync_dir(self.folder)
                self._write(b"".join(lines))
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
        """Records from ``cursor`` on (at most ``max_events`` and about ``max_bytes``, at
        least one), and the cursor after them. Read in blocks of whole records: one read
        for a usual batch."""
        blocks: list[bytes] = []
        marks: list[tuple[int, int]] = []
        count = total = 0
        seq, pos = cursor
        while count < max_events and total < max_bytes:
            with self.changed:
                size = self._sizes.get(seq)
                last = seq >= self._write_seq
            if size is None or pos >= size:
                if last or size is None:
                    break
                seq, pos = seq + 1, 0
                continue
            with self._path(seq).open("rb") as handle:
                while pos < size and count < max_events and total < max_bytes:
                    want = (max_events - count) * RECORD_GUESS
                    handle.seek(pos)
                    block = handle.read(min(size - pos, max(want, READ_BLOCK)))
                    end = 0
                    for tab, end in _record_marks(block, 0, len(block)):
                        marks.append((total + tab, total + end))
                        count += 1
                        if count >= max_events or total + end >= max_bytes:
                            break
                    if end == 0:  # a record longer than the block: its two lines
                        handle.seek(pos)
                        block = handle.readline(size - pos)
                        block += handle.readline(size - pos - len(block))
                        end = len(block)
                        if not (block.endswith(b"\n") and b"\t" in block):
                            raise ValueError("not a spool record")
                        marks.append((total + block.rindex(b"\t"), total + end))
                        count += 1
                    blocks.append(block[:end] if end < len(block) else block)
                    pos += end
                    total += end
        data = blocks[0] if len(blocks) == 1 else b"".join(blocks)
        return Batch(data, marks), (seq, pos)

    def records(self, cursor: Cursor) -> Iterator[Record]:
        """Every record from ``cursor`` to the end (used at start-up)."""
        while True:
            batch, cursor = self.read(cursor, 10000, 64 << 20)
            if not batch:
                return
            yield from batch

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


def upgrade_spool(folder: Path, registry: Registry) -> None:
    """Rewrite the segments of the spool format before bulk-ready records
    (``segment-N.jsonl``, a line per record: ``["key",start,resume,"index","id","source"]``,
    a tab, the document) from the registry's cursor on into one segment of the current
    format, then point the cursor at it. Each step can be repeated after a crash (the old
    segments go last): at worst records are sent again, answered as duplicates."""
    old = sorted(folder.glob("segment-*.jsonl"))
    if not old:
        return
    seq, pos = registry.cursor
    lines = []
    for path in old:
        number = int(path.stem.split("-")[1])
        if number < seq:
            continue
        data = path.read_bytes()[pos if number == seq else 0 :]
        for line in data.splitlines():
            meta, _tab, doc = line.partition(b"\t")
            try:
                key, start, resume, index, event_id, source = orjson.loads(meta)
            except (ValueError, TypeError):
                break  # a torn last record
            lines.append(Record(key, start, resume, index, event_id, source, doc).line())
    write_atomically(folder / f"segment-{seq:012d}.spool", b"".join(lines))
    registry.cursor = (seq, 0)
    registry.save()
    for path in old:
        path.unlink()
    log.info("spool_upgraded", records=len(lines))


def _repair(path: Path) -> int:
    """Cut a torn or unreadable tail off a segment; return its good size."""
    data = path.read_bytes()
    good = 0
    for _tab, end in _record_marks(data, 0, len(data)):
        try:
            Record.parse(data[good:end])
        except (ValueError, TypeError):
            break
        good = end
    if good != len(data):
        log.warning("spool_repaired", segment=path.name, kept=good, cut=len(data) - good)
        with path.open("r+b") as handle:
            handle.truncate(good)
    return good
