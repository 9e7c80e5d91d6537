"""The log shipper on plain files against the real Elasticsearch: crashes, outages,
rotation, dead letters, junk."""

import os
import random
import shutil
import time
from pathlib import Path

import pytest
import requests

from hubkeeper import prtg
from hubkeeper.deploy.elasticsearch import Elasticsearch, flood_stage
from hubkeeper.deploy.stack import wait_for
from tests.integration.shipping import (
    ShipperRun,
    Writer,
    assert_exactly_once,
    dynamic_json_keys,
    stop_shippers,  # noqa: F401  (autouse)
)
from tests.integration.smallfs import can_mount, small_tmpfs

pytestmark = pytest.mark.beside  # runs beside the main lane (tests/run)


def file_source(name: str, *patterns: Path, parser: str = "raw") -> dict:
    return {"name": name, "paths": [str(p) for p in patterns], "parser": parser, "timezone": "UTC"}


def test_kill_9_five_times_loses_and_duplicates_nothing(
    tmp_path: Path, elasticsearch: Elasticsearch
) -> None:
    log = tmp_path / "app.log"
    run = ShipperRun(tmp_path / "shipper", elasticsearch, "kill9", [file_source("app", log)])
    writer = Writer(log, count=20000, rate=2500)
    writer.start()
    run.start()
    kills = 0
    rng = random.Random(5)
    while kills < 5:
        time.sleep(rng.uniform(0.8, 1.6))
        run.kill()
        kills += 1
        run.start()
    writer.join()
    run.wait_shipped(log)
    run.stop()
    assert writer.written == 20000
    assert_exactly_once(run.docs(), writer.expected())


def test_elasticsearch_outage_loses_and_duplicates_nothing(
    tmp_path: Path, elasticsearch: Elasticsearch
) -> None:
    log = tmp_path / "app.log"
    run = ShipperRun(tmp_path / "shipper", elasticsearch, "outage", [file_source("app", log)])
    writer = Writer(log, count=6000, rate=200)  # 30 s of lines
    writer.start()
    run.start()
    wait_for(lambda: run.acked(log) > 0, 30, "the first acknowledgement")
    elasticsearch.stop()
    try:
        time.sleep(20)  # lines keep coming while Elasticsearch is away
        assert run.metric("hubkeeper_shipper_output_up") == 0
        assert run.metric("hubkeeper_shipper_spool_bytes") > 0
        assert run.metric("hubkeeper_shipper_request_failures_total") > 0
        assert run.healthy()
    finally:
        elasticsearch.start()
    writer.join()
    run.wait_shipped(log)
    assert run.metric("hubkeeper_shipper_output_up") == 1
    run.stop()
    assert_exactly_once(run.docs(), writer.expected())


def test_elasticsearch_past_its_flood_stage_loses_dead_letters_and_duplicates_nothing(
    tmp_path: Path, elasticsearch: Elasticsearch
) -> None:
    """While the node is past its flood-stage disk watermark, the index answers 429 (its
    read-only-allow-delete block) and nothing gets through; once Elasticsearch lifts the
    block, every line arrives once and none was dead-lettered."""
    log = tmp_path / "app.log"
    run = ShipperRun(tmp_path / "shipper", elasticsearch, "flood", [file_source("app", log)])
    writer = Writer(log, count=4000, rate=150)  # about 27 s of lines
    writer.start()
    run.start()
    wait_for(lambda: run.acked(log) > 0, 30, "the first acknowledgement")
    blocked = lambda: run.metric(  # noqa: E731
        "hubkeeper_shipper_events_blocked_total", 'block="flood_stage"'
    )
    with flood_stage(elasticsearch.url):
        wait_for(lambda: blocked() > 0, 30, "items refused by the flood-stage block")
        acked = run.acked(log)
        time.sleep(3)
        assert run.acked(log) == acked  # nothing got through the block
        assert run.metric("hubkeeper_shipper_output_up") == 1  # it answers: items refused
    writer.join()
    run.wait_shipped(log)
    assert run.metric("hubkeeper_shipper_events_total", 'outcome="retried"') >= blocked() > 0
    run.stop()
    assert_exactly_once(run.docs(), writer.expected())
    assert run.dead_letters() == []
    events = [(e["event"], e.get("blocks")) for e in run.log() if "block" in e["event"]]
    assert events == [("index_blocked", ["flood_stage"]), ("index_block_lifted", None)]


def test_a_full_spool_filesystem_pauses_reading_and_loses_nothing(
    tmp_path: Path, elasticsearch: Elasticsearch
) -> None:
    if not can_mount():
        pytest.skip("mounting a tmpfs needs root")
    log = tmp_path / "app.log"
    run = ShipperRun(tmp_path / "shipper", elasticsearch, "spoolfs", [file_source("app", log)])
    writer = Writer(log, count=3000, rate=200)  # 15 s of lines
    with small_tmpfs(run.state, "2m") as fs:  # the state folder: spool and registry
        writer.start()
        run.start()
        wait_for(lambda: run.acked(log) > 0, 30, "the first acknowledgement")
        fs.fill()
        wait_for(lambda: run.metric("hubkeeper_shipper_spool_writable") == 0, 10, "unwritable")
        time.sleep(4)  # lines keep coming, the reader keeps trying
        health = requests.get(f"http://127.0.0.1:{run.port}/healthz", timeout=5)
        assert health.ok and health.text.startswith("degraded: ")
        assert "No space left on device" in health.text
        fs.free()
        writer.join()
        run.wait_shipped(log, timeout=60)
        assert run.running()
        assert run.metric("hubkeeper_shipper_spool_writable") == 1
        failures = run.metric("hubkeeper_shipper_spool_write_failures_total", 'what="spool"')
        run.stop()
    events = [e for e in run.log() if e["event"].startswith("spool_")]
    episodes = [(e["event"], e["what"]) for e in events if e.get("what") == "spool"]
    assert episodes == [("spool_unwritable", "spool"), ("spool_writable_again", "spool")]
    assert failures > 1  # tried again and again, logged once
    assert_exactly_once(run.docs(), writer.expected())


def test_rotation_by_rename_and_copytruncate_while_writing(
    tmp_path: Path, elasticsearch: Elasticsearch
) -> None:
    renamed, copied = tmp_path / "renamed.log", tmp_path / "copied.log"
    run = ShipperRun(
        tmp_path / "shipper",
        elasticsearch,
        "rotate",
        # The renamed file leaves the glob (read on through its open descriptor); the
        # copies of copytruncate stay in it (a copy carries what was not read yet).
        [file_source("renamed", renamed), file_source("copied", Path(f"{copied}*"))],
    )
    rename_writer = Writer(renamed, count=8000, rate=1000, tag="renamed")
    copy_writer = Writer(copied, count=8000, rate=1000, tag="copied")
    run.start()
    rename_writer.start()
    copy_writer.start()
    for turn in range(3):
        time.sleep(2)
        os.rename(renamed, renamed.with_name(f"renamed.log.{turn}"))
        time.sleep(0.05)  # the application writes a little more to the old file
        rename_writer.reopen()
        with copy_writer.lock:  # logrotate: shift the old copies, copy, truncate
            for older in range(turn, 0, -1):
                os.rename(f"{copied}.{older}", f"{copied}.{older + 1}")
            shutil.copyfile(copied, f"{copied}.1")
            os.truncate(copied, 0)
    rename_writer.join()
    copy_writer.join()
    run.wait_shipped(renamed, copied, *tmp_path.glob("copied.log.*"))
    time.sleep(1)
    run.stop()
    docs = run.docs()
    assert_exactly_once(
        [d for d in docs if d["service.name"] == "renamed"], rename_writer.expected()
    )
    assert_exactly_once([d for d in docs if d["service.name"] == "copied"], copy_writer.expected())
    assert len(list(tmp_path.glob("renamed.log.*"))) == 3
    assert len(list(tmp_path.glob("copied.log.*"))) == 3


def test_mapping_conflict_goes_to_dead_letters_and_the_rest_continues(
    tmp_path: Path, elasticsearch: Elasticsearch
) -> None:
    log = tmp_path / "app.jsonl"
    log.write_text('{"message": "first", "count": 1}\n')
    run = ShipperRun(
        tmp_path / "shipper", elasticsearch, "dlq", [file_source("app", log, parser="json")]
    )
    dynamic_json_keys(elasticsearch, "dlq-logs", "json")
    run.start()
    run.wait_shipped(log)
    with log.open("a") as handle:
        handle.write('{"message": "second", "count": "many"}\n')
        handle.write('{"message": "third", "count": 3}\n')
    run.wait_shipped(log)
    assert run.metric("hubkeeper_shipper_events_total", 'outcome="dead_lettered"') == 1
    sensor = requests.get(f"http://127.0.0.1:{run.port}/prtg/shipper", timeout=5).json()
    assert prtg.check(sensor) == []
    channels = {c["channel"]: c["value"] for c in sensor["prtg"]["result"]}
    assert (channels["Dead letters"], channels["Indexed"], channels["Lag"]) == (1, 2, 0)
    run.stop()
    assert [d["message"] for d in run.docs()] == ["first", "third"]
    (dead,) = run.dead_letters()
    assert dead["error.type"] == "document_parsing_exception"
    assert '"count":"many"' in dead["event.original"]
    assert dead["labels.target_index"].startswith("dlq-logs-json-")
    assert any(e["event"] == "event_dead_lettered" for e in run.log())


def test_binary_junk_invalid_utf8_and_a_10_mb_line_are_shipped(
    tmp_path: Path, elasticsearch: Elasticsearch
) -> None:
    log = tmp_path / "junk.log"
    junk = b"\x00" + bytes(random.Random(1).randrange(256) for _ in range(3000)).replace(
        b"\n", b" "
    )
    with log.open("wb") as handle:
        handle.write(b"[I 2026-11-25 10:00:00.000 JupyterHub app:1] before\n")
        handle.write(junk + b"\n")
        handle.write(b"caf\xe9 latin-1 \xff\xfe\n")
        handle.write(b"L" * (10 * 1024 * 1024) + b"\n")
        handle.write(b"[I 2026-11-25 10:00:01.000 JupyterHub app:1] after\n")
    run = ShipperRun(
        tmp_path / "shipper", elasticsearch, "junk", [file_source("junk", log, parser="jupyterhub")]
    )
    run.start()
    run.wait_shipped(log)
    assert run.running()
    run.stop()
    docs = run.docs()
    assert len(docs) == 5
    before, binary, latin, long, after = docs
    assert (before["message"], after["message"]) == ("before", "after")
    assert "parse_failure" in binary["tags"]
    assert latin["message"] == "caf\ufffd latin-1 \ufffd\ufffd"
    assert {"parse_failure", "invalid_utf8"} <= set(latin["tags"])
    assert "truncated" in long["tags"] and long["message"] == "L" * (1024 * 1024)
    assert long["log.offset"] < after["log.offset"]


@pytest.mark.parametrize("parser", ["jupyterhub"])
def test_traceback_is_one_event(tmp_path: Path, elasticsearch: Elasticsearch, parser: str) -> None:
    log = tmp_path / "hub.log"
    log.write_text(
        "[E 2026-11-25 10:00:00.000 JupyterHub web:1] Uncaught exception GET /hub/x\n"
        "    Traceback (most recent call last):\n"
        '      File "x.py", line 1, in f\n'
        "    ValueError: boom\n"
        "[I 2026-11-25 10:00:01.000 JupyterHub app:1] next\n"
    )
    run = ShipperRun(
        tmp_path / "shipper", elasticsearch, "trace", [file_source("hub", log, parser=parser)]
    )
    run.start()
    run.wait_shipped(log)
    run.stop()
    first, second = run.docs()
    assert first["error.type"] == "ValueError" and first["error.message"] == "boom"
    assert first["error.stack_trace"].startswith("    Traceback (most recent call last):")
    assert second["message"] == "next"
