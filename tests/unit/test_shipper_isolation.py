"""A file that cannot be read stops only itself: the other sources are read on, it is read
again after a pause, and ``/healthz`` (degraded) and the metrics name its source."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from hubkeeper.loader import from_dict
from hubkeeper.shippers.shipper import Shipper


def two_sources(folder: Path) -> Shipper:
    """A shipper of two raw file sources, ``good`` and ``bad``, of two lines each."""
    for name in ("good", "bad"):
        (folder / f"{name}.log").write_text(f"{name} one\n{name} two\n")
    config = from_dict(
        {
            "shipper": {
                "state_dir": str(folder / "state"),
                "sources": [
                    {"name": name, "paths": [str(folder / f"{name}.log")], "parser": "raw"}
                    for name in ("good", "bad")
                ],
            }
        }
    )
    return Shipper(config)


def test_a_file_that_fails_to_read_stops_only_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipper = two_sources(tmp_path)
    try:
        files = shipper.files
        files.scan()
        bad_fd = next(t.fd for t in files.tails.values() if t.source.name == "bad")
        real_pread = os.pread

        def failing_pread(fd: int, length: int, offset: int) -> bytes:
            if fd == bad_fd:
                raise OSError(errno.EIO, "Input/output error")
            return real_pread(fd, length, offset)

        monkeypatch.setattr(os, "pread", failing_pread)
        records, moves = files.read(1 << 20, final=True)
        files.advance(moves)
        shipper._count_read(records)
        assert sorted(r.source for r in records) == ["good", "good"]
        healthy, text = shipper.health()
        assert healthy and text.startswith("degraded: source bad: ")
        assert "bad.log: OSError: [Errno 5] Input/output error" in text
        metric = shipper.metrics_registry.get_sample_value
        assert metric("hubkeeper_shipper_read_failures_total", {"source": "bad"}) == 1
        assert metric("hubkeeper_shipper_source_failing", {"source": "bad"}) == 1
        assert metric("hubkeeper_shipper_source_failing", {"source": "good"}) == 0

        with (tmp_path / "good.log").open("a") as good:
            good.write("good three\n")
        records, moves = files.read(1 << 20, final=True)  # the bad file waits for its pause
        files.advance(moves)
        assert [r.source for r in records] == ["good"]

        monkeypatch.setattr(os, "pread", real_pread)  # the disk is back
        for tail in files.tails.values():
            tail.retry_at = 0.0  # as when the pause is over
        records, moves = files.read(1 << 20, final=True)
        assert [r.source for r in records] == ["bad", "bad"]  # from where it stopped
        assert b'"message":"bad one"' in records[0].doc
        assert shipper.health() == (True, "ok\n")
        assert metric("hubkeeper_shipper_source_failing", {"source": "bad"}) == 0
    finally:
        shipper.stop()


def test_a_file_that_cannot_be_opened_is_reported_until_it_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipper = two_sources(tmp_path)
    bad = str(tmp_path / "bad.log")
    real_open = os.open

    def refusing_open(path: str, flags: int, *args: int) -> int:
        if path == bad:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, *args)

    try:
        monkeypatch.setattr(os, "open", refusing_open)
        shipper.files.scan()
        shipper.files.scan()  # still refused: counted once
        records, moves = shipper.files.read(1 << 20, final=True)
        shipper.files.advance(moves)
        shipper._count_read(records)
        assert {r.source for r in records} == {"good"}
        healthy, text = shipper.health()
        assert (
            healthy
            and text
            == f"degraded: source bad: {bad}: PermissionError: [Errno 13] Permission denied\n"
        )
        metric = shipper.metrics_registry.get_sample_value
        assert metric("hubkeeper_shipper_read_failures_total", {"source": "bad"}) == 1
        monkeypatch.setattr(os, "open", real_open)
        shipper.files.scan()
        records, _moves = shipper.files.read(1 << 20, final=True)
        assert [r.source for r in records] == ["bad", "bad"]
        assert shipper.health() == (True, "ok\n")
    finally:
        shipper.stop()
