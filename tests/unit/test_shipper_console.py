"""``hubkeeper ship-logs --once --output ndjson[=FILE]``: arguments, and the documents
printed in-process (stdout holds nothing else, nothing is written to the state folder)."""

import errno
import json
import os
from pathlib import Path

import pytest

from hubkeeper.cli import main, ndjson_target
from hubkeeper.loader import load
from hubkeeper.shippers.console import print_documents
from hubkeeper.shippers.sources import Files

HUB_LINES = (
    "[I 2026-11-25 10:00:00.000 JupyterHub app:1] first\n"
    "[E 2026-11-25 10:00:01.000 JupyterHub web:1] Uncaught exception\n"
    "    Traceback (most recent call last):\n"
    "    ValueError: boom\n"
)


@pytest.fixture
def logging_restored(json_logs: object) -> None:
    """``main`` configures logging; the fixture puts it back afterwards."""


def config_file(tmp_path: Path, *sources: str) -> Path:
    path = tmp_path / "hubkeeper.toml"
    body = "".join(f"[[shipper.sources]]\n{source}\n" for source in sources)
    path.write_text(f'[shipper]\nstate_dir = "{tmp_path / "state"}"\n{body}')
    return path


def file_source(name: str, path: Path, parser: str) -> str:
    return f'name = "{name}"\npaths = ["{path}"]\nparser = "{parser}"\ntimezone = "UTC"'


@pytest.mark.parametrize(
    ("value", "target"), [("ndjson", "-"), ("ndjson=out.json", "out.json"), ("ndjson=-", "-")]
)
def test_output_is_ndjson_to_stdout_or_a_file(value: str, target: str) -> None:
    assert ndjson_target(value) == target


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--once"], "--once and --output go together"),
        (["--output", "ndjson"], "--once and --output go together"),
        (["--once", "--output", "json"], "got 'json', expected ndjson or ndjson=FILE"),
        (["--once", "--output", "ndjson="], "got 'ndjson=', expected ndjson or ndjson=FILE"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    config = config_file(tmp_path, file_source("hub", tmp_path / "hub.log", "jupyterhub"))
    with pytest.raises(SystemExit) as exited:
        main(["ship-logs", "--config", str(config), *argv])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "state").exists()


def test_an_invalid_config_still_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "hubkeeper.toml"
    config.write_text("[shipper]\nmultiline_timeout = -1\n")
    assert main(["ship-logs", "--config", str(config), "--once", "--output", "ndjson"]) == 2
    assert "shipper.multiline_timeout" in capsys.readouterr().err


def test_documents_on_stdout_log_on_stderr_nothing_in_the_state_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], logging_restored: None
) -> None:
    hub = tmp_path / "hub.log"
    hub.write_text(HUB_LINES + "[I 2026-11-25 10:00:02.000 JupyterHub app:1] no newline")
    config = config_file(tmp_path, file_source("hub", hub, "jupyterhub"))
    assert main(["ship-logs", "--config", str(config), "--once", "--output", "ndjson"]) == 0
    out, err = capsys.readouterr()
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["message"] for d in docs] == ["first", "Uncaught exception", "no newline"]
    assert docs[1]["error.type"] == "ValueError"  # flushed: nothing more was to come
    assert [d["log.offset"] for d in docs] == [0, 51, len(HUB_LINES)]
    events = [json.loads(line)["event"] for line in err.splitlines()]
    assert events == ["file_opened", "documents_printed"]
    assert not (tmp_path / "state").exists()
    assert hub.read_text().endswith("no newline")  # the file itself is left alone


def test_container_logs_carry_the_container_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], logging_restored: None
) -> None:
    folder = tmp_path / "containers" / "c0ffee"
    folder.mkdir(parents=True)
    records = [
        {"log": "hello\n", "stream": "stdout", "time": "2026-11-25T10:00:00.000000001Z"},
        {"log": "api_token=s3cr3t-value\n", "stream": "stderr", "time": "2026-11-25T10:00:01Z"},
    ]
    (folder / "c0ffee-json.log").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = load(
        config_file(
            tmp_path,
            f'name = "containers"\ntype = "docker"\n'
            f'paths = ["{tmp_path}/containers/*/*-json.log*"]',
        )
    )

    def lookup(container_id: str) -> dict[str, str]:
        return {"container.id": container_id, "container.name": "jupyter-ann"}

    assert print_documents(config, "-", lookup) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d["container.name"], d["hubkeeper.stream"]) for d in docs] == [
        ("jupyter-ann", "stdout"), ("jupyter-ann", "stderr"),
    ]  # fmt: skip
    assert "s3cr3t" not in json.dumps(docs)


def test_to_a_file_atomically(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], logging_restored: None
) -> None:
    hub = tmp_path / "hub.log"
    hub.write_text(HUB_LINES)
    out = tmp_path / "out" / "docs.ndjson"
    out.parent.mkdir()
    out.write_text("old\n")
    config = load(config_file(tmp_path, file_source("hub", hub, "jupyterhub")))
    assert print_documents(config, str(out)) == 0
    assert capsys.readouterr().out == ""
    assert [json.loads(line)["message"] for line in out.read_text().splitlines()] == [
        "first", "Uncaught exception",
    ]  # fmt: skip
    assert [p.name for p in out.parent.iterdir()] == ["docs.ndjson"]  # no temporary left
    assert print_documents(config, str(tmp_path / "missing" / "docs.ndjson")) == 1
    assert "print_failed" in capsys.readouterr().err


def test_a_failed_read_is_reported_after_printing_the_rest(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    logging_restored: None,
) -> None:
    good, bad = tmp_path / "hub.log", tmp_path / "bad.log"
    good.write_text(HUB_LINES)
    bad.write_text("[I 2026-11-25 10:00:00.000 JupyterHub app:1] unreadable\n")
    config = load(
        config_file(
            tmp_path, file_source("hub", good, "jupyterhub"), file_source("bad", bad, "auto")
        )
    )
    scan, pread = Files.scan, os.pread
    disk_failed: list[bool] = []

    def failing_disk(fd: int, length: int, offset: int) -> bytes:
        if disk_failed and os.readlink(f"/proc/self/fd/{fd}") == str(bad):
            raise OSError(errno.EIO, "Input/output error")
        return pread(fd, length, offset)

    def scan_then_fail(files: Files) -> None:
        scan(files)
        disk_failed.append(True)  # the files are open: now bad.log's disk fails

    monkeypatch.setattr(os, "pread", failing_disk)
    monkeypatch.setattr(Files, "scan", scan_then_fail)
    assert print_documents(config, "-") == 1
    out, err = capsys.readouterr()
    assert [json.loads(line)["message"] for line in out.splitlines()] == [
        "first", "Uncaught exception",
    ]  # fmt: skip
    events = [json.loads(line) for line in err.splitlines()]
    unread = [e for e in events if e["event"] == "file_not_read_to_end"]
    assert [(e["path"], e["read"]) for e in unread] == [(str(bad), 0)]
    assert "Input/output error" in json.dumps(events)
    assert events[-1]["event"] == "documents_printed" and events[-1]["complete"] is False
