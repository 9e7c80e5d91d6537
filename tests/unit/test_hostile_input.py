"""Untrusted input through every parser and the whole reader (real files in tmp_path):
no exception escapes, every line is accounted for in exactly one document, every document
is valid JSON with a real timestamp, and no secret gets through.

The fixed hostile lines of tests/hostile.py run under every parser and time zone; then
Hypothesis generates more (random bytes, JSON of every type and depth with NaN and huge
numbers, log prefixes with any number in any date field, Docker json-file records with
wrong types), derandomized so that every run tries the same cases.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubkeeper.config import ShipperSource
from hubkeeper.shippers.framing import FAILURE, PARSE_FAILURE
from hubkeeper.shippers.parsers import (
    PARSERS,
    Unparsable,
    is_continuation,
    make_parser,
    valid_timestamp,
)
from hubkeeper.shippers.sources import (
    TIMESTAMP_INVALID,
    TIMESTAMP_ORIGINAL,
    Files,
    Settings,
    make_sources,
)
from hubkeeper.shippers.store import Registry
from tests.hostile import HOSTILE, SECRETS

ZONES = ["UTC", "Europe/Berlin", "America/St_Johns", "local"]
PROPERTY = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def read_all(folder: Path, data: bytes, parser: str, zone: str, docker: bool = False) -> list:
    """Write ``data`` as a log file and read it to its end; the documents, parsed."""
    container = "c" * 64
    if docker:
        path = folder / container / f"{container}-json.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        source = ShipperSource(name="s", type="docker", paths=[str(path)], parser=parser)
    else:
        path = folder / "app.log"
        source = ShipperSource(name="s", paths=[str(path)], parser=parser, timezone=zone)
    path.write_bytes(data)
    info = {"container.id": container, "user.name": "mallory"}
    files = Files(
        make_sources([source], None),
        Registry(folder / "registry.json"),
        Settings(),
        {},
        (lambda _id: info) if docker else None,
    )
    files.scan()
    records, moves = files.read(1 << 26, final=True)
    assert files.failing() == {}
    assert [resume for _tail, resume, _emitted in moves] == [len(data)]  # read to the end
    docs = []
    for record in records:
        text = record.doc.decode("utf-8")  # valid UTF-8, and JSON without NaN
        assert not any(secret in text for secret in SECRETS)
        doc = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
        assert valid_timestamp(doc["@timestamp"]), doc["@timestamp"]
        docs.append(doc)
    return docs


def assert_accounted_for(lines: list[bytes], docs: list[dict], texts: list[str] | None = None):
    """One document per event: each starts at a line, none twice, and every line that
    cannot continue the event before it starts one (the others are folded into it).
    ``texts``: what each line says, where it is not the line itself (Docker records)."""
    texts = texts or [line.decode("utf-8", "replace") for line in lines]
    starts, offset = [], 0
    for line in lines:
        starts.append(offset)
        offset += len(line) + 1
    offsets = [doc["log.offset"] for doc in docs]
    assert len(offsets) == len(set(offsets))
    assert set(offsets) <= set(starts)
    for index, (start, text) in enumerate(zip(starts, texts, strict=True)):
        if index == 0 or not is_continuation(text):
            assert start in offsets, f"line at {start} is in no document: {text[:80]!r}"


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_every_hostile_line_is_shipped_once_between_ordinary_ones(
    tmp_path: Path, parser: str, zone: str
) -> None:
    lines = [part for n, (_name, line) in enumerate(HOSTILE) for part in (b"ordinary %d" % n, line)]
    docs = read_all(tmp_path, b"\n".join(lines) + b"\n", parser, zone)
    assert len(docs) == len(lines)
    assert_accounted_for(lines, docs)
    ordinary = [doc for doc in docs[0::2]]
    assert [doc["message"] for doc in ordinary] == [f"ordinary {n}" for n in range(len(HOSTILE))]


def test_hostile_lines_carry_the_reason_they_were_not_parsed(tmp_path: Path) -> None:
    docs = read_all(tmp_path, b"\n".join(line for _, line in HOSTILE) + b"\n", "auto", "UTC")
    by_name = {name: doc for (name, _), doc in zip(HOSTILE, docs, strict=True)}
    for name in ("json-feb-30", "json-hour-24", "tornado-hour-24", "nginx-feb-31", "chp-hour-25"):
        assert TIMESTAMP_INVALID in by_name[name]["tags"], name
    assert by_name["json-feb-30"][TIMESTAMP_ORIGINAL] == "2026-02-30T10:00:00Z"
    assert by_name["tornado-hour-24"]["message"] == "hour 24"  # parsed, but for its time
    assert by_name["json-deep"][FAILURE] == "json_too_deep"
    assert by_name["json-lone-surrogate"][FAILURE] == "encode_error"
    assert by_name["json-lone-surrogate"]["tags"] == [PARSE_FAILURE]
    assert by_name["json-nan"]["hubkeeper.json"]["v"] == "NaN"  # kept, as text


def test_a_time_in_a_second_already_seen_is_still_checked_whole(tmp_path: Path) -> None:
    """The reader keeps each second's index; a later time in that second is a real
    instant only with a fraction of three digits (any decimal digits, as valid_timestamp
    takes them)."""
    stamps = ["2026-11-25T10:00:00.123Z", "2026-11-25T10:00:00.1x3Z", "2026-11-25T10:00:00.4Z"]
    lines = [json.dumps({"@timestamp": stamp, "message": "m"}).encode() for stamp in stamps]
    lines.append(b"[I 2026-11-25 10:00:00.\xd9\xa1\xd9\xa2\xd9\xa3 JupyterHub app:1] m")
    docs = read_all(tmp_path, b"\n".join(lines) + b"\n", "auto", "UTC")
    assert [doc["@timestamp"] for doc in docs[:1]] + [docs[2]["@timestamp"]] == [
        "2026-11-25T10:00:00.123Z", "2026-11-25T10:00:00.400Z",
    ]  # fmt: skip
    assert docs[1][TIMESTAMP_ORIGINAL] == stamps[1] and TIMESTAMP_INVALID in docs[1]["tags"]
    assert docs[3]["@timestamp"] == "2026-11-25T10:00:00.\u0661\u0662\u0663Z"
    assert "tags" not in docs[3]


def test_a_docker_record_of_wrong_types_is_passed_on_as_a_line(tmp_path: Path) -> None:
    records = [
        {"log": "ok\n", "stream": "stdout", "time": "2026-11-25T10:00:00.5Z"},
        {"log": "listed stream\n", "stream": ["stdout"], "time": "2026-11-25T10:00:00Z"},
        {"log": ["not", "text"], "stream": "stdout"},
        {"log": "bad time\n", "stream": "stderr", "time": 12},
        {"log": "no such day\n", "stream": "stdout", "time": "2026-02-30T10:00:00Z"},
    ]
    lines = [json.dumps(record).encode() for record in records]
    docs = read_all(tmp_path, b"\n".join(lines) + b"\n", "auto", "UTC", docker=True)
    assert_accounted_for(lines, docs)
    first, *_, last = sorted(docs, key=lambda doc: doc["log.offset"])
    assert len(docs) == len(records)
    assert first["message"] == "ok" and "tags" not in first  # plain output: no failure
    assert TIMESTAMP_INVALID in last["tags"]


def test_a_user_server_cannot_forge_its_identity(tmp_path: Path) -> None:
    forged = [line for name, line in HOSTILE if name.startswith("forged-")]
    records = [json.dumps({"log": line.decode() + "\n", "stream": "stdout"}) for line in forged]
    docs = read_all(tmp_path, "\n".join(records).encode() + b"\n", "auto", "UTC", docker=True)
    assert len(docs) == 2
    assert {doc["user.name"] for doc in docs} == {"mallory"}  # the container's label


# --- generated input ---------------------------------------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["2026-02-30T00:00:00Z", "0000-01-01", "10000-01-01T00:00:00", "24:00"])
)
_KEYS = st.sampled_from(
    ["time", "ts", "@timestamp", "timestamp", "msg", "message", "event", "level", "severity",
     "logger", "name", "exception", "api_token", "password", "headers", "Authorization", ""]
) | st.text(max_size=12)  # fmt: skip
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=25,
)
_NUMBER = st.integers(min_value=0, max_value=99)


@st.composite
def prefixed(draw: st.DrawFn) -> bytes:
    """A line of one of the known formats, with any two-digit number in each date field."""
    y, mo, d, h, mi, s = (
        draw(st.integers(min_value=0, max_value=9999)),
        *(draw(_NUMBER) for _ in range(5)),
    )
    rest = draw(st.text(max_size=40)).replace("\n", " ")
    month = draw(st.sampled_from(["Jan", "Feb", "Xyz"]))
    offset = draw(st.sampled_from(["+0000", "+0100", "-0930", "+9999"]))
    return draw(st.sampled_from([
        f"[{draw(st.sampled_from('DIWEC'))} {y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}"
        f".123 JupyterHub app:1] {rest}",
        f"{h:02d}:{mi:02d}:{s:02d}.000 [ConfigProxy] info: {rest}",
        f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.000Z [ConfigProxy] error: {rest}",
        f'1.2.3.4 - - [{d:02d}/{month}/{y:04d}:{h:02d}:{mi:02d}:{s:02d} {offset}] "GET / H" 200 1'
        f' "-" "{rest}"',
        f"{y:04d}/{mo:02d}/{d:02d} {h:02d}:{mi:02d}:{s:02d} [error] 1#1: {rest}",
    ])).encode("utf-8", "surrogatepass")  # fmt: skip


_LINE = (
    st.binary(max_size=200).map(lambda b: b.replace(b"\n", b" "))
    | _JSON.map(lambda v: json.dumps(v, allow_nan=True).encode())
    | st.dictionaries(_KEYS, _JSON, min_size=1, max_size=6).map(
        lambda v: json.dumps(v, allow_nan=True).encode()
    )
    | prefixed()
)


@PROPERTY
@given(line=_LINE, parser=st.sampled_from(sorted(PARSERS)), zone=st.sampled_from(ZONES))
def test_parsers_return_a_document_or_none_or_say_why_not(line: bytes, parser: str, zone: str):
    try:
        doc = make_parser(parser, zone).parse(line.decode("utf-8", "replace"))
    except Unparsable as unparsable:
        assert unparsable.reason
        return
    assert doc is None or isinstance(doc, dict)


@PROPERTY
@given(
    lines=st.lists(_LINE, min_size=1, max_size=12),
    parser=st.sampled_from(sorted(PARSERS)),
    zone=st.sampled_from(ZONES),
)
def test_the_reader_accounts_for_every_generated_line(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes], parser: str, zone: str
) -> None:
    lines = [line.replace(b"\r", b" ") for line in lines]  # a CR before the newline is dropped
    docs = read_all(tmp_path_factory.mktemp("r"), b"\n".join(lines) + b"\n", parser, zone)
    assert_accounted_for(lines, docs)


_RECORD = st.fixed_dictionaries(
    {  # whole lines (a partial one joins the next record: tests/unit/test_shipper_framing)
        "log": st.text(max_size=40).map(lambda t: t.replace("\n", " ") + "\n")
        | _SCALARS.filter(lambda value: not isinstance(value, str))
    },
    optional={"stream": st.sampled_from(["stdout", "stderr"]) | _SCALARS, "time": _SCALARS},
)


@PROPERTY
@given(records=st.lists(_RECORD, min_size=1, max_size=10))
def test_docker_records_of_any_shape_are_each_one_document(
    tmp_path_factory: pytest.TempPathFactory, records: list[dict]
) -> None:
    lines = [json.dumps(record, allow_nan=True).encode() for record in records]
    docs = read_all(tmp_path_factory.mktemp("d"), b"\n".join(lines) + b"\n", "auto", "UTC", True)
    texts = [  # a record of the wrong shape is passed on as the line it is
        record["log"].rstrip("\n")
        if isinstance(record["log"], str) and isinstance(record.get("stream", ""), str)
        else line.decode()
        for record, line in zip(records, lines, strict=True)
    ]
    assert_accounted_for(lines, docs, texts)
