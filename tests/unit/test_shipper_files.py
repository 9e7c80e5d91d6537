"""File identity across rotation, read positions, records (on real files in tmp_path)."""

import json
import os
import shutil
from pathlib import Path

import pytest

from hubkeeper.config import ShipperSource
from hubkeeper.shippers.sources import (
    ID_KEY_CHARS,
    Files,
    Settings,
    entry_key,
    event_id,
    make_sources,
    use_docker_root,
)
from hubkeeper.shippers.store import Registry


def files_for(
    folder: Path, pattern: str, registry: Registry | None = None, spooled=None, **kw
) -> Files:
    source = ShipperSource(name="app", paths=[str(folder / pattern)], parser="raw", timezone="UTC")
    settings = Settings(
        fingerprint_bytes=kw.pop("fingerprint_bytes", 64), multiline_timeout=0.0, host_name="h"
    )
    registry = registry or Registry(folder / "registry.json")
    return Files(make_sources([source], None), registry, settings, spooled or {}, **kw)


def drain(files: Files) -> list[str]:
    """Scan, read everything, and return the messages (positions advanced)."""
    files.scan()
    messages = []
    while True:
        records, moves = files.read(1 << 20)
        files.advance(moves)
        if not records:
            return messages
        messages += [json.loads(r.doc)["message"] for r in records]


def lines(tag: str, count: int) -> str:
    return "".join(f"{tag} {n:04d} {'.' * 40}\n" for n in range(count))


def test_rename_rotation_reads_the_old_file_to_its_end(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text(lines("a", 5))
    files = files_for(tmp_path, "app.log")
    assert len(drain(files)) == 5
    with log.open("a") as old:
        log.rename(tmp_path / "app.log.1")
        old.write(lines("late", 2))  # the writer has not reopened yet
        log.write_text(lines("b", 3))
    assert drain(files) == [*lines("late", 2).splitlines(), *lines("b", 3).splitlines()]
    assert len(files.tails) == 2  # the old file stays open until it has been quiet a while


def test_copytruncate_moves_the_entry_to_the_copy(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text(lines("a", 5))
    files = files_for(tmp_path, "app.log*")
    assert len(drain(files)) == 5
    with log.open("a") as handle:
        handle.write(lines("unread", 2))
    shutil.copyfile(log, tmp_path / "app.log.1")
    files.scan()  # the copy is seen before the truncation: it waits
    assert len(files.tails) == 1
    os.truncate(log, 0)
    with log.open("a") as handle:
        handle.write(lines("new", 3))
    assert sorted(drain(files)) == sorted(
        [*lines("unread", 2).splitlines(), *lines("new", 3).splitlines()]
    )
    paths = sorted(e.path for e in files.registry.entries.values())
    assert paths == [str(log), str(tmp_path / "app.log.1")]


def test_truncation_without_a_copy_starts_over(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text(lines("a", 5))
    files = files_for(tmp_path, "app.log")
    drain(files)
    log.write_text(lines("z", 2))  # truncated and rewritten in place
    assert drain(files) == lines("z", 2).splitlines()


def test_short_files_are_fingerprinted_whole_and_grow(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("tiny\n")
    files = files_for(tmp_path, "*.log", fingerprint_bytes=64)
    assert drain(files) == ["tiny"]
    (entry,) = files.registry.entries.values()
    assert entry.fp_len == 5
    with log.open("a") as handle:
        handle.write(lines("more", 3))
    assert len(drain(files)) == 3
    assert entry.fp_len == 64
    # a new file holding the same first bytes as one being read is a copy: it waits
    shutil.copyfile(log, tmp_path / "copy.log")
    assert drain(files) == [] and len(files.tails) == 1


def test_restart_resumes_after_what_the_spool_holds(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text(lines("a", 4))
    files = files_for(tmp_path, "app.log")
    files.scan()
    records, _moves = files.read(1 << 20)  # read but never acknowledged nor advanced
    (entry,) = files.registry.entries.values()
    assert entry.acked == 0
    spooled = {entry.key: records[1].resume}  # the spool holds the first two events
    again = files_for(tmp_path, "app.log", Registry(tmp_path / "registry.json"), spooled)
    assert drain(again) == lines("a", 4).splitlines()[2:]
    # ids are the same however often an event is read
    assert records[2].id == event_id(entry.key, records[2].start)


def test_entry_keys_differ_by_file_and_generation() -> None:
    keys = {
        entry_key("app", 1, 2, 0, "f"),
        entry_key("app", 1, 3, 0, "f"),
        entry_key("app", 1, 2, 1, "f"),
    }
    assert len(keys) == 3 and event_id("k", 0) != event_id("k", 1)


def test_a_files_ids_share_its_prefix_and_sort_by_offset() -> None:
    key, other = entry_key("app", 1, 2, 0, "f"), entry_key("app", 1, 3, 0, "f")
    ids = [event_id(key, start) for start in (0, 9, 4096, 1 << 40)]
    assert ids == sorted(ids) and len({id_[:ID_KEY_CHARS] for id_ in ids}) == 1
    assert len(set(ids)) == 4 and event_id(other, 0) not in ids


def test_docker_files_of_other_containers_are_ignored(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "c1" / "c1-json.log", tmp_path / "c2" / "c2-json.log"
    for path in (ours, theirs):
        path.parent.mkdir()
        path.write_text(
            json.dumps(
                {
                    "log": f"{path.parent.name} says hi\n",
                    "stream": "stdout",
                    "time": "2026-11-25T10:00:00.5Z",
                }
            )
            + "\n"
        )
    source = ShipperSource(
        name="containers", type="docker", paths=[str(tmp_path / "*" / "*-json.log*")]
    )
    looked_up = []

    def info(container_id: str) -> dict | None:
        looked_up.append(container_id)
        return {"container.id": container_id, "user.name": "ann"} if container_id == "c1" else None

    settings = Settings(multiline_timeout=0.0)
    files = Files(make_sources([source], None), Registry(tmp_path / "r.json"), settings, {}, info)
    files.scan()
    files.scan()
    records, _ = files.read(1 << 20)
    (doc,) = [json.loads(r.doc) for r in records]
    assert (doc["message"], doc["user.name"], doc["hubkeeper.stream"]) == (
        "c1 says hi", "ann", "stdout",
    )  # fmt: skip
    assert doc["@timestamp"] == "2026-11-25T10:00:00.500Z" and doc["event.dataset"] == "container"
    assert sorted(looked_up) == ["c1", "c2"]  # once each: the answer is remembered


@pytest.mark.parametrize("quiet_after", [3600.0, 0.0])
def test_a_big_file_is_read_window_by_window(tmp_path: Path, quiet_after: float) -> None:
    """Windows follow each other without waiting for quiet, and an event is flushed only at
    the end of the file, never at a window's end (a traceback may cross one)."""
    log = tmp_path / "app.log"
    head = "[E 2026-11-25 10:00:00.000 JupyterHub web:1] boom\n"
    frames = "".join(f"    frame {n}\n" for n in range(10))
    trace = "    Traceback (most recent call last):\n" + frames + "    ValueError: x\n"
    with log.open("w") as handle:
        for n in range(200):
            handle.write(f"[I 2026-11-25 10:00:00.000 JupyterHub app:1] line {n}\n")
            if n in (40, 120):
                handle.write(head + trace)
    source = ShipperSource(name="app", paths=[str(log)], parser="jupyterhub", timezone="UTC")
    settings = Settings(read_window=100, max_event_bytes=400, multiline_timeout=quiet_after)
    files = Files(make_sources([source], None), Registry(tmp_path / "r.json"), settings, {})
    files.scan()
    docs = []
    for _ in range(100):
        records, moves = files.read(1500)
        files.advance(moves)
        docs += [json.loads(r.doc) for r in records]
    # Unless the file is quiet, the last line waits: a traceback might still follow it.
    assert len(docs) == (202 if quiet_after == 0 else 201)
    errors = [d for d in docs if d["message"] == "boom"]
    assert [d["error.type"] for d in errors] == ["ValueError", "ValueError"]
    assert all(d["error.stack_trace"].count("frame") == 10 for d in errors)


def test_lag_is_the_age_of_the_oldest_unacknowledged_line(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text(lines("a", 2))
    files = files_for(tmp_path, "app.log")
    drain(files)
    (tail,) = files.tails.values()
    now = tail.seen[0][1]
    assert tail.lag_seconds(now + 5) == 5  # nothing acknowledged yet
    with log.open("a") as handle:
        handle.write(lines("b", 1))
    drain(files)
    tail.entry.acked = len(lines("a", 2))  # the first lines were acknowledged
    assert 0 <= tail.lag_seconds(now + 5) < 5  # the newer line is younger
    tail.entry.acked = log.stat().st_size
    assert tail.lag_seconds(now + 5) == 0


def test_container_logs_are_read_where_the_engine_keeps_them_even_when_it_answers_late(
    tmp_path: Path,
) -> None:
    """An engine restarting while the shipper starts tells its data root later; a docker
    source with paths of its own and a file source keep theirs."""
    own = ShipperSource(name="containers", type="docker")
    pinned = ShipperSource(name="pinned", type="docker", paths=["/srv/docker/containers/*/*.log"])
    plain = ShipperSource(name="app", paths=[str(tmp_path / "*.log")])
    sources = make_sources([own, pinned, plain], None)  # the engine did not answer
    assert sources[0].patterns == ["/var/lib/docker/containers/*/*-json.log*"]
    use_docker_root(sources, "/data/engine")
    assert [source.patterns for source in sources] == [
        ["/data/engine/containers/*/*-json.log*"],
        ["/srv/docker/containers/*/*.log"],
        [str(tmp_path / "*.log")],
    ]
    assert make_sources([own], "/data/engine")[0].patterns == sources[0].patterns
