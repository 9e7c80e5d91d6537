"""Spool and registry durability, item outcomes, dead letters, retention, templates, and
the settle-and-retry loop."""

import json
import struct
import zlib
from datetime import date
from pathlib import Path

import pytest

from hubkeeper.backoff import full_jitter
from hubkeeper.config import ShipperElasticsearchConfig
from hubkeeper.loader import from_dict
from hubkeeper.shippers.delivery import (
    CREATED,
    Delivery,
    ItemResult,
    Outcome,
    Settled,
    Unavailable,
    block,
    dead_letter,
    dead_letter_index,
    next_round,
    outcome,
    settle,
)
from hubkeeper.shippers.elasticsearch import expired, templates
from hubkeeper.shippers.logstash import encode_window
from hubkeeper.shippers.shipper import Shipper
from hubkeeper.shippers.store import Entry, Record, Registry, Spool, chunks, spool_record


def record(n: int, key: str = "k") -> Record:
    doc = json.dumps({"@timestamp": "2026-11-25T10:00:00.000Z", "message": f"m{n}"}).encode()
    return Record.of(
        key, n * 10, n * 10 + 10, "hubkeeper-logs-raw-2026.11.25", f"id{n}", "app", doc
    )


def test_spool_hands_out_batches_and_deletes_what_was_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, cursor=(0, 0), segment_bytes=300, chunk_events=2)
    for batch in range(4):
        spool.append([record(batch * 3 + i) for i in range(3)])  # chunks of 2 and 1
    assert len(list(tmp_path.glob("segment-*"))) == 4
    first, after = spool.read((0, 0), max_events=5, max_bytes=1 << 20)
    assert [r.id for r in first] == ["id0", "id1", "id2", "id3", "id4"]  # whole chunks
    rest, end = spool.read(after, max_events=100, max_bytes=1 << 20)
    assert [r.id for r in rest] == [f"id{n}" for n in range(5, 12)] and end == spool.end()
    one, _after = spool.read((0, 0), max_events=1, max_bytes=1 << 20)
    assert [r.id for r in one] == ["id0", "id1"]  # at least one chunk, past the limit
    used = spool.used()
    spool.release(after)
    assert spool.used() < used and len(list(tmp_path.glob("segment-*"))) == 3


def test_spool_limit(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=500, cursor=(0, 0))
    while not spool.full():
        spool.append([record(1)])
    assert spool.used() >= 500


@pytest.mark.parametrize("cut", [10, 40, 150, -30, -1])  # in the head, files, body
def test_a_torn_chunk_is_cut_off_when_the_spool_opens(tmp_path: Path, cut: int) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, cursor=(0, 0))
    spool.append([record(0), record(1)])
    spool.close()
    (segment,) = tmp_path.glob("segment-*")
    whole = segment.stat().st_size
    with segment.open("ab") as handle:
        handle.write(b"".join(chunks([record(2), record(4)], 250, 1 << 20))[:cut])  # killed
    reopened = Spool(tmp_path, max_bytes=1 << 20, cursor=(0, 0))
    assert segment.stat().st_size == whole
    assert [r.id for r in reopened.records((0, 0))] == ["id0", "id1"]
    reopened.append([record(3)])
    assert [r.id for r in reopened.records((0, 0))] == ["id0", "id1", "id3"]
    assert reopened.offsets((0, 0)) == {"k": 40}


def test_a_chunk_whose_parts_disagree_is_cut_off_when_the_spool_opens(tmp_path: Path) -> None:
    head, files, *lines = chunks([record(0), record(1)], 250, 1 << 20)
    other_head, other_files, *_lines = chunks([record(0), record(2)], 250, 1 << 20)
    body = b"".join(lines)
    (tmp_path / "segment-000000000000.chunks").write_bytes(
        head + files + body + other_head + files + body + head + other_files + body
    )
    spool = Spool(tmp_path, max_bytes=1 << 20, cursor=(0, 0))
    assert [r.id for r in spool.records((0, 0))] == ["id0", "id1"]


def test_spool_records_round_trip(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, cursor=(0, 0))
    original = [record(7), record(8, key="other")]
    spool.append(original)
    assert list(spool.records((0, 0))) == original


def test_registry_commits_offsets_and_cursor_together(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.json")
    registry.put(Entry("k", "app", "/x.log", 1, 2, 64, "fp"))
    registry.acknowledge({"k": 120, "gone": 5}, (3, 40))
    registry.acknowledge({"k": 100}, (3, 80))  # never backwards
    assert registry.dirty and Registry(tmp_path / "registry.json").cursor == (0, 0)
    assert registry.save() == (3, 80) and not registry.dirty
    again = Registry(tmp_path / "registry.json")
    assert again.entries["k"].acked == 120 and again.cursor == (3, 80)
    assert [p.name for p in tmp_path.iterdir()] == ["registry.json"]  # no temporary left


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, Outcome.INDEXED), (201, Outcome.INDEXED), (409, Outcome.DUPLICATE),
        (429, Outcome.RETRY), (500, Outcome.RETRY), (503, Outcome.RETRY),
        (400, Outcome.DEAD), (404, Outcome.DEAD), (413, Outcome.DEAD),
    ],
)  # fmt: skip
def test_item_outcomes(status: int, expected: Outcome) -> None:
    assert outcome(status) is expected


def blocked(status: int, blocks: str) -> ItemResult:
    """A bulk item refused by index blocks, as Elasticsearch words it."""
    reason = f"index [hubkeeper-logs-raw-2026.11.25] blocked by: [{blocks}];"
    return ItemResult(status, {"type": "cluster_block_exception", "reason": reason})


#: What 9.2.0 and 8.19.21 answered here past the flood stage (the docs' link cut off).
FLOOD_STAGE_429 = blocked(
    429, "TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, index has "
    "read-only-allow-delete block; for more information, see https://www.elastic.co/docs/",
)  # fmt: skip
FLOOD_STAGE_403 = blocked(403, "FORBIDDEN/12/index read-only / allow delete (api)")  # up to #49393
WRITE_BLOCK_403 = blocked(403, "FORBIDDEN/8/index write (api)")  # index.blocks.write


@pytest.mark.parametrize(
    ("item", "kind"),
    [(FLOOD_STAGE_429, "flood_stage"), (FLOOD_STAGE_403, "flood_stage"),
     (WRITE_BLOCK_403, "other"),
     (blocked(403, "FORBIDDEN/8/index write (api), FORBIDDEN/12/index read-only"), "flood_stage")],
)  # fmt: skip
def test_an_item_an_index_block_refused_is_sent_again_whatever_its_status(
    item: ItemResult, kind: str
) -> None:
    assert outcome(item.status, item.error) is Outcome.RETRY
    assert block(item.error) == kind


@pytest.mark.parametrize(
    "error",
    [None, {"type": "document_parsing_exception", "reason": "failed to parse field [x]"},
     {"type": "security_exception", "reason": "action [indices:data/write/bulk] is unauthorized"}],
)  # fmt: skip
def test_a_refusal_of_the_document_is_no_block_and_goes_to_the_dead_letters(
    error: dict | None,
) -> None:
    assert block(error) is None
    assert outcome(403 if error and "security" in error["type"] else 400, error) is Outcome.DEAD


def test_a_flood_stage_block_never_dead_letters_an_event_and_is_counted_by_kind() -> None:
    records = [record(n) for n in range(3)]
    output = ScriptedOutput(
        [FLOOD_STAGE_403, FLOOD_STAGE_429, WRITE_BLOCK_403], [FLOOD_STAGE_429] * 3, [201] * 3
    )
    reports: list = []
    assert delivery(output, lambda _attempt: True, reports).send(records) == []
    first, second, third = reports
    assert first.retried == 3 and first.blocked == {"flood_stage": 2, "other": 1}
    assert second.blocked == {"flood_stage": 3} and not first.done and not second.done
    assert third.done == {Outcome.INDEXED: 3} and not third.blocked
    assert all(r.index == records[0].index for batch in output.batches for r in batch)


def test_backoff_is_jittered_and_capped() -> None:
    delays = [full_jitter(attempt, 0.5, 4.0) for attempt in range(1, 12) for _ in range(20)]
    assert all(0 <= d <= 4.0 for d in delays)
    assert max(full_jitter(1, 0.5, 4.0) for _ in range(50)) <= 0.5
    assert len({round(d, 6) for d in delays}) > 100


def test_dead_letters_keep_the_original_and_the_error() -> None:
    config = ShipperElasticsearchConfig()
    error = {
        "type": "document_parsing_exception",
        "reason": "failed to parse field [json.count] of type [long]",
        "caused_by": {"type": "illegal_argument_exception", "reason": 'For input string: "many"'},
    }
    original = record(3)
    index = dead_letter_index(config, original.index)
    assert index == "hubkeeper-deadletter-2026.11.25"
    dead = dead_letter(original, error, index)
    doc = json.loads(dead.doc)
    assert (dead.id, dead.index, dead.key, dead.resume) == ("id3", index, "k", 40)
    assert doc["error.type"] == "document_parsing_exception"
    assert doc["message"].endswith('For input string: "many"')
    assert json.loads(doc["event.original"]) == json.loads(original.doc)
    assert doc["labels.target_index"] == original.index and doc["@timestamp"].startswith("2026")


def test_retention_picks_daily_indices_older_than_the_limit() -> None:
    names = [
        "hubkeeper-logs-jupyterhub-2026.11.01",
        "hubkeeper-logs-nginx.access-2026.10.25",
        "hubkeeper-logs-nginx.access-2026.10.26",
        "hubkeeper-deadletter-2026.09.30",
        "hubkeeper-logs-odd-2026.13.40",
        "unrelated",
    ]
    assert expired(names, date(2026, 11, 25), 30) == [
        "hubkeeper-deadletter-2026.09.30",
        "hubkeeper-logs-nginx.access-2026.10.25",
    ]
    assert expired(names, date(2026, 11, 25), 0) == []


def test_templates_cover_the_indices_and_map_ecs_fields() -> None:
    config = ShipperElasticsearchConfig(replicas=0)
    logs, dead = templates(config).values()
    assert logs["index_patterns"] == ["hubkeeper-logs-*"] and dead["priority"] > logs["priority"]
    properties = logs["template"]["mappings"]["properties"]
    assert properties["@timestamp"] == {"type": "date"}
    assert (
        properties["http"]["properties"]["response"]["properties"]["status_code"]["type"] == "long"
    )
    assert properties["event"]["properties"]["duration"]["type"] == "long"
    assert logs["template"]["settings"]["number_of_replicas"] == 0


def test_shipper_config_validates(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("secret\n")
    config = from_dict(
        {"shipper": {"elasticsearch": {"username": "ship", "password_file": "pw"}}}, base=tmp_path
    )
    assert config.shipper.elasticsearch.password.reveal() == "secret"
    assert config.shipper.sources[0].type == "docker" and config.shipper.endpoint.port == 9104
    with pytest.raises(Exception, match="shipper.sources: expected unique source names"):
        from_dict({"shipper": {"sources": [{"name": "a", "paths": ["x"]}] * 2}})
    with pytest.raises(Exception, match="username: expected together with password_file"):
        from_dict({"shipper": {"elasticsearch": {"username": "ship"}}})
    both = {"username": "ship", "password_file": "pw", "api_key_file": "pw"}
    with pytest.raises(Exception, match="api_key_file: expected without username"):
        from_dict({"shipper": {"elasticsearch": both}}, base=tmp_path)


def test_lumberjack_v2_window_frames() -> None:
    records = [record(1), record(2)]
    plain = encode_window(records, level=0)
    assert plain[:6] == b"2W" + struct.pack(">I", 2)
    packed = encode_window(records, level=3)
    assert packed[6:8] == b"2C"
    (length,) = struct.unpack(">I", packed[8:12])
    assert zlib.decompress(packed[12 : 12 + length]) == plain[6:] and len(packed) == 12 + length
    frames, rest = [], plain[6:]
    while rest:
        assert rest[:2] == b"2J"
        seq, size = struct.unpack(">II", rest[2:10])
        frames.append((seq, json.loads(rest[10 : 10 + size])))
        rest = rest[10 + size :]
    assert [seq for seq, _ in frames] == [1, 2]
    assert frames[1][1] == {
        "@metadata": {"_id": "id2", "_index": "hubkeeper-logs-raw-2026.11.25"},
        "@timestamp": "2026-11-25T10:00:00.000Z",
        "message": "m2",
    }


# --- the settle-and-retry loop -----------------------------------------------------------


class ScriptedOutput:
    """An output answering each request from a script: an exception, or a status per record."""

    def __init__(self, *answers: Unavailable | list[int | ItemResult]) -> None:
        self.answers = list(answers)
        self.batches: list[list[Record]] = []

    def install_templates(self) -> None:
        pass

    def bulk(self, records: list[Record]) -> list[ItemResult]:
        self.batches.append(list(records))
        answer = self.answers.pop(0)
        if isinstance(answer, Unavailable):
            raise answer
        return [
            item if isinstance(item, ItemResult)
            else ItemResult(item, {"type": "refused"} if item == 400 else None)
            for item in answer
        ]  # fmt: skip

    def delete_expired(self, _today: date) -> list[str]:
        return []


def delivery(output: ScriptedOutput, retry, reports: list) -> Delivery:
    return Delivery(
        output, ShipperElasticsearchConfig(), retry,
        on_unavailable=lambda error, attempt: reports.append((str(error), attempt)),
        on_answer=reports.append,
    )  # fmt: skip


def test_delivery_sends_what_is_left_again_until_everything_is_done() -> None:
    records = [record(n) for n in range(3)]
    output = ScriptedOutput(Unavailable("down"), [201, 503, 400], [201, 201])
    attempts: list[int] = []
    reports: list = []

    def retry(attempt: int) -> bool:
        attempts.append(attempt)
        return True

    assert delivery(output, retry, reports).send(records) == []
    assert attempts == [1, 2] and [r.id for r in output.batches[2]] == ["id1", "id2"]
    assert output.batches[2][1].index == "hubkeeper-deadletter-2026.11.25"
    assert reports[0] == ("down", 1)
    first, second = reports[1:]
    assert isinstance(first, Settled) and isinstance(second, Settled)
    assert first.retried == 1 and first.done == {Outcome.INDEXED: 1, Outcome.DEAD: 1}
    assert second.retried == 0 and second.done == {Outcome.INDEXED: 1}


def test_delivery_hands_back_what_is_left_when_told_to_stop() -> None:
    records = [record(n) for n in range(3)]
    answered = delivery(ScriptedOutput([201, 429, 201]), next_round, [])
    assert answered.send(records) == [records[1]]
    failed = delivery(ScriptedOutput(Unavailable("down")), next_round, [])
    assert failed.send(records) == records


def test_items_answered_429_or_5xx_or_blocked_are_counted_as_retried(tmp_path: Path) -> None:
    config = from_dict(
        {
            "shipper": {
                "state_dir": str(tmp_path / "state"),
                "sources": [{"name": "app", "paths": [str(tmp_path / "*.log")]}],
                "retry_backoff": 0.001,
                "retry_backoff_max": 0.001,
            }
        }
    )
    shipper = Shipper(config)
    shipper.delivery.output = ScriptedOutput([201, 503, 429], [FLOOD_STAGE_429, 201], [201])
    try:
        assert shipper.delivery.send([record(n) for n in range(3)]) == []
        metric = shipper.metrics_registry.get_sample_value
        assert metric("hubkeeper_shipper_events_total", {"outcome": "retried"}) == 3
        assert metric("hubkeeper_shipper_events_blocked_total", {"block": "flood_stage"}) == 1
        assert metric("hubkeeper_shipper_events_blocked_total", {"block": "other"}) == 0
        assert metric("hubkeeper_shipper_events_total", {"outcome": "indexed"}) == 3
        _status, _type, body = shipper.prtg_route("/prtg/shipper", {})
        channels = {c["channel"]: c["value"] for c in json.loads(body)["prtg"]["result"]}
        assert channels["Retried"] == 3 and channels["Indexed"] == 3
        assert shipper.status()[1]["hubkeeper.shipper.events.retried"] == 3
    finally:
        shipper.stop()


def test_spool_reads_big_records_and_stops_at_the_byte_limit(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 30, cursor=(0, 0), chunk_bytes=100_000)
    big = Record.of("k", 0, 10, "i", "big", "app", b'{"message":"' + b"x" * 200_000 + b'"}')
    spool.append([record(0), big, *[record(n) for n in range(1, 400)]])  # chunks of 100K
    first, after = spool.read((0, 0), max_events=1000, max_bytes=10)
    assert [r.id for r in first] == ["id0"]  # at least one chunk, past the limit
    second, after = spool.read(after, max_events=1000, max_bytes=10)
    assert [r.id for r in second] == ["big"] and second[0].doc == big.doc
    rest, end = spool.read(after, max_events=1000, max_bytes=1 << 20)
    assert [r.id for r in rest] == [f"id{n}" for n in range(1, 400)] and end == spool.end()
    assert len(first.data) + len(second.data) + len(rest.data) < end[1]  # the bodies


def test_an_answer_with_every_record_indexed_is_settled_at_once() -> None:
    config = ShipperElasticsearchConfig()
    records = [record(n) for n in range(3)]
    settled = settle(records, [CREATED] * 3, config)
    assert settled.done == {Outcome.INDEXED: 3} and not settled.again
    dead = dead_letter(records[0], {"type": "x"}, dead_letter_index(config, records[0].index))
    settled = settle([dead, *records[1:]], [CREATED] * 3, config)
    assert settled.done == {Outcome.INDEXED: 2}  # a dead letter is counted when refused
    with pytest.raises(ValueError):
        settle(records, [CREATED] * 2, config)


@pytest.mark.parametrize(
    "line",
    [
        b'["k",1,2,"i","id","s"]',  # no document
        b'["k",1,2,"i","id"]\t{}',  # five values
        b'["k","1",2,"i","id","s"]\t{}',  # an offset as text
        b'["k",1,true,"i","id","s"]\t{}',
        b'["k",1,2,"i",7,"s"]\t{}',
        b'{"k":1,"a":2,"b":3,"c":4,"d":5,"e":6}\t{}',
        b'["k",1,2,"i","id","s"\t{}',  # torn
        b"\t{}",
    ],
)
def test_a_line_that_is_no_spool_record_is_refused(line: bytes) -> None:
    with pytest.raises(ValueError):
        spool_record(line)
