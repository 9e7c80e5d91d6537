"""The pipeline's batches: files read window by window (every file, whatever its share of
the reader's budget), the spool's bulk-ready format (a batch's bulk body and offsets come
from its bytes), and a spool written by an earlier version (a line per record) taken over."""

from __future__ import annotations

import json
from pathlib import Path

from hubkeeper.config import ShipperSource
from hubkeeper.shippers.sources import Files, Settings, make_sources
from hubkeeper.shippers.store import Batch, Record, Registry, Spool, bulk_body, upgrade_spool


def record(n: int, key: str = "k") -> Record:
    doc = json.dumps({"message": f"m\t{n}", "n": n}).encode()  # a tab in text is escaped
    return Record.of(key, n * 10, n * 10 + 10, f"logs-raw-2026.11.2{n % 2}", f"id{n}", "app", doc)


def test_a_spooled_batch_is_the_bulk_body_and_offsets_of_its_records(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, cursor=(0, 0), chunk_events=2)
    records = [record(0, "a"), record(1, "b"), record(2, "a"), record(3, "b"), record(4, "a")]
    spool.append(records)
    batch, _after = spool.read((0, 0), max_events=4, max_bytes=1 << 20)
    assert isinstance(batch, Batch) and len(batch) == 4 and len(batch.chunks) == 2
    assert bulk_body(batch) == bulk_body(records[:4])  # the same bytes as written out
    assert batch.offsets() == {"a": 30, "b": 40}
    assert batch.size == len(bulk_body(records[:4]))
    assert list(batch) == records[:4]


def test_spools_of_the_earlier_formats_are_sent_from_their_cursor_on(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    first = [
        b'["%b",%d,%d,"%b","%b","%b"]\t%b\n'
        % (r.key.encode(), r.start, r.resume, r.index.encode(), r.id.encode(), b"app", r.doc)
        for r in (record(n) for n in range(5))
    ]
    second = [
        b'{"create":{"_index":"%b","_id":"%b"}}\n%b\t["%b",%d,%d,"app"]\n'
        % (r.index.encode(), r.id.encode(), r.doc, r.key.encode(), r.start, r.resume)
        for r in (record(n) for n in range(5, 9))
    ]
    (folder / "segment-000000000002.jsonl").write_bytes(first[0])  # acknowledged: deleted
    (folder / "segment-000000000003.jsonl").write_bytes(b"".join(first[:3]))
    (folder / "segment-000000000004.jsonl").write_bytes(b"".join(first[3:]) + first[0][:20])
    (folder / "segment-000000000005.spool").write_bytes(b"".join(second) + second[0][:-9])
    registry = Registry(tmp_path / "registry.json")
    registry.cursor = (3, len(first[0]))  # the first record was acknowledged
    upgrade_spool(folder, registry, chunk_events=2)
    assert Registry(tmp_path / "registry.json").cursor == (3, 0)
    assert sorted(p.name for p in folder.iterdir()) == [
        f"segment-00000000000{n}.chunks" for n in (3, 4, 5)
    ]
    spool = Spool(folder, max_bytes=1 << 20, cursor=registry.cursor)
    assert [r.id for r in spool.records(registry.cursor)] == [f"id{n}" for n in range(1, 9)]
    assert spool.offsets(registry.cursor) == {"k": 90}
    upgrade_spool(folder, registry)  # nothing left to do
    assert [r.id for r in spool.records(registry.cursor)] == [f"id{n}" for n in range(1, 9)]


def test_an_upgrade_cut_short_is_done_again_without_losing_a_record(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    lines = [
        b'{"create":{"_index":"%b","_id":"%b"}}\n%b\t["%b",%d,%d,"app"]\n'
        % (r.index.encode(), r.id.encode(), r.doc, r.key.encode(), r.start, r.resume)
        for r in (record(n) for n in range(4))
    ]
    for n, line in enumerate(lines):
        (folder / f"segment-{n:012d}.spool").write_bytes(line)
    registry = Registry(tmp_path / "registry.json")
    upgrade_spool(folder, registry)
    (folder / "segment-000000000002.chunks").unlink()  # stopped before writing this one
    for n in (2, 3):  # ... and before deleting these
        (folder / f"segment-{n:012d}.spool").write_bytes(lines[n])
    upgrade_spool(folder, registry)
    spool = Spool(folder, max_bytes=1 << 20, cursor=registry.cursor)
    assert [r.id for r in spool.records(registry.cursor)] == ["id0", "id1", "id2", "id3"]


def test_a_file_is_read_however_small_its_share_of_the_budget(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.log").write_text("".join(f"{name} {n}\n" for n in range(5)))
    source = ShipperSource(name="app", paths=[str(tmp_path / "*.log")], parser="raw")
    files = Files(make_sources([source], None), Registry(tmp_path / "r.json"), Settings(), {})
    files.scan()
    records, moves = files.read(2)  # a share of 0 bytes each: one window all the same
    assert [json.loads(r.doc)["message"] for r in records] == [f"a {n}" for n in range(4)]
    files.advance(moves)  # (the last line waits: more lines may continue its event)
    records, _moves = files.read(1 << 20)
    assert sorted(json.loads(r.doc)["message"] for r in records) == [
        f"{name} {n}" for name in "bc" for n in range(4)
    ]


def test_an_append_is_cut_into_chunks_by_count_and_by_size(tmp_path: Path) -> None:
    big = [
        Record.of("b", n, n + 1, "i", f"big{n}", "app", b'"%b"' % (b"x" * 400)) for n in range(6)
    ]
    spool = Spool(tmp_path, max_bytes=1 << 20, cursor=(0, 0), chunk_events=3, chunk_bytes=1000)
    spool.append([record(0), record(1), *big, record(2)])  # records of 87 and 441 bytes
    batch, end = spool.read((0, 0), max_events=1000, max_bytes=1 << 20)
    assert end == spool.end()
    assert [c.count for c in batch.chunks] == [3, 2, 1, 3]  # by count, then by size
    assert [c.offsets for c in batch.chunks][:3] == [{"k": 20, "b": 1}, {"b": 3}, {"b": 4}]
    assert [r.id for r in batch] == ["id0", "id1", *(f"big{n}" for n in range(6)), "id2"]
