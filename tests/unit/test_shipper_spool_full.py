"""The spool and the registry on a real filesystem that fills up (a small tmpfs: root
only), and the bookkeeping of a full state folder."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubkeeper.shippers.shipper import WriteTrouble
from hubkeeper.shippers.store import Entry, Record, Registry, Spool, Unwritable, commit
from tests.integration.smallfs import SmallFS, can_mount, small_tmpfs


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[SmallFS]:
    if not can_mount():
        pytest.skip("mounting a tmpfs needs root")
    with small_tmpfs(tmp_path / "fs", "2m") as mounted:
        yield mounted


def record(n: int) -> Record:
    doc = json.dumps({"message": f"{n} " + "x" * 900}).encode()
    return Record.of("k", n * 10, n * 10 + 10, "logs-raw-2026.12.01", f"id{n}", "app", doc)


def append_until_full(spool: Spool, first: int = 0) -> int:
    """Batches of 20 records until one fails; the number of records written."""
    n = first
    while True:
        try:
            spool.append([record(n + i) for i in range(20)])
        except Unwritable as error:
            assert error.what == "spool"
            return n
        n += 20


def ids(spool: Spool) -> list[str]:
    return [r.id for r in spool.records((0, 0))]


def test_a_write_that_fills_the_filesystem_is_cut_back_to_the_last_whole_chunk(
    fs: SmallFS,
) -> None:
    spool = Spool(fs.path / "spool", 10 << 20, (0, 0))
    written = append_until_full(spool)
    segment = next((fs.path / "spool").glob("segment-*"))
    assert segment.stat().st_size == spool.end()[1]  # no torn bytes left in the file
    assert ids(spool) == [f"id{n}" for n in range(written)]


def test_after_space_returns_appends_go_on_and_every_record_reads_back_once(
    fs: SmallFS,
) -> None:
    (fs.path / "ballast").write_bytes(b"\0" * (100 << 10))
    spool = Spool(fs.path / "spool", 10 << 20, (0, 0))
    written = append_until_full(spool)
    append_until_full(spool, written)  # still full: fails again, nothing kept
    (fs.path / "ballast").unlink()
    spool.append([record(written + i) for i in range(20)])
    expected = [f"id{n}" for n in range(written + 20)]
    assert ids(spool) == expected
    spool.close()
    assert ids(Spool(fs.path / "spool", 10 << 20, (0, 0))) == expected  # as reopened


def test_a_registry_that_cannot_be_saved_stays_dirty_and_leaves_no_temporary_file(
    fs: SmallFS,
) -> None:
    registry = Registry(fs.path / "registry.json")
    registry.put(Entry("a", "app", "/a.log", 1, 1, 4, "fp"))
    fs.fill()
    registry.acknowledge({"a": 100}, (0, 500))
    with pytest.raises(Unwritable, match="registry"):
        registry.save()
    assert registry.dirty
    assert sorted(p.name for p in fs.path.iterdir()) == [".filler", "registry.json"]
    fs.free()
    assert registry.save() == (0, 500) and not registry.dirty
    assert Registry(fs.path / "registry.json").entries["a"].acked == 100


def test_a_new_registry_entry_that_cannot_be_saved_is_dropped_a_change_is_kept(
    fs: SmallFS,
) -> None:
    registry = Registry(fs.path / "registry.json")
    old = Entry("a", "app", "/a.log", 1, 1, 4, "fp")
    registry.put(old)
    fs.fill()
    with pytest.raises(Unwritable):
        registry.put(Entry("b", "app", "/b.log", 1, 2, 4, "fp"))
    old.path = "/a.log.1"
    registry.put(old)  # a change: kept dirty, written at the next save
    assert list(registry.entries) == ["a"] and registry.dirty
    fs.free()
    registry.save()
    assert Registry(fs.path / "registry.json").entries["a"].path == "/a.log.1"


def test_a_spool_that_filled_its_own_filesystem_frees_it_with_its_reserve(
    fs: SmallFS,
) -> None:
    registry = Registry(fs.path / "registry.json")
    spool = Spool(fs.path / "spool", 10 << 20, registry.cursor)
    commit(registry, spool)  # takes the reserve
    written = append_until_full(spool)  # 1 MiB in segment 0, the rest in 1
    fs.fill()  # the last few KiB (smaller records would take them)
    batch, end = spool.read((0, 0), 100000, 64 << 20)
    assert len(batch) == written and end[0] == 1
    registry.acknowledge({}, end)
    with pytest.raises(Unwritable):
        registry.save()
    assert commit(registry, spool) == end  # with the reserve's room
    segments = [p.name for p in (fs.path / "spool").glob("segment-*")]
    assert segments == ["segment-000000000001.chunks"]
    spool.append([record(written + i) for i in range(20)])
    assert [r.id for r in spool.records(end)] == [f"id{n}" for n in range(written, written + 20)]
    spool.close()


def test_without_a_reserve_a_full_filesystem_keeps_the_registry_dirty_and_the_segments(
    fs: SmallFS,
) -> None:
    registry = Registry(fs.path / "registry.json")
    spool = Spool(fs.path / "spool", 10 << 20, registry.cursor)
    written = append_until_full(spool)
    fs.fill()
    _batch, end = spool.read((0, 0), 100000, 64 << 20)
    registry.acknowledge({}, end)
    with pytest.raises(Unwritable):
        commit(registry, spool)
    assert registry.dirty and len(list((fs.path / "spool").glob("segment-*"))) == 2
    assert len(list(spool.records((0, 0)))) == written
    spool.close()


def test_a_write_trouble_episode_starts_with_the_first_failure_and_ends_with_a_success() -> None:
    trouble = WriteTrouble()
    assert trouble.succeeded("spool", 1.0) is None
    assert trouble.failed("spool", "full", 10.0)
    assert not trouble.failed("spool", "full", 11.0)
    assert trouble.failed("registry", "full", 12.0)  # its own episode
    assert trouble.succeeded("spool", 15.0) == (5.0, 2)
    assert trouble.succeeded("spool", 16.0) is None
    assert list(trouble.failing) == ["registry"]


def test_a_big_segment_is_closed_once_the_sender_is_in_it_and_freed_once_it_passed(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path, 10 << 20, (0, 0), chunk_events=10)
    spool.append([record(n) for n in range(1200)])  # over CAUGHT_UP_ROLL, under 16 MiB
    _batch, after = spool.read((0, 0), 10, 64 << 20)
    spool.release(after)
    spool.append([record(1200)])
    batch, end = spool.read(after, 10000, 64 << 20)
    assert [r.id for r in batch] == [f"id{n}" for n in range(10, 1201)] and end[0] == 1
    spool.release(end)
    assert [p.name for p in tmp_path.iterdir()] == ["segment-000000000001.chunks"]


def test_a_big_segment_the_sender_has_not_reached_is_kept_open(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10 << 20, (0, 0))
    spool.append([record(n) for n in range(1200)])
    spool.append([record(n) for n in range(1200, 2400)])  # the sender is in 0: a new one
    spool.append([record(2400)])  # the sender is still in 0: 1 goes on
    assert spool.end()[0] == 1
