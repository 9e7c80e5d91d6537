"""Bytes at offsets into lines, Docker records and multi-line events."""

import json

from hubkeeper.redact import DEFAULT
from hubkeeper.shippers.framing import (
    Assembler,
    DockerRecords,
    Line,
    decode,
    events_from,
    read_lines,
)
from hubkeeper.shippers.parsers import make_parser


def reader(data: bytes):
    return lambda offset, length: data[offset : offset + length]


def lines_of(data: bytes, start: int = 0, max_bytes: int = 100, window: int = 1 << 20) -> list:
    return list(read_lines(reader(data), start, len(data), max_bytes, window))


def test_lines_carry_their_offsets_and_a_partial_last_line_waits() -> None:
    data = b"one\r\ntwo\nthr"
    assert [(x.text, x.start, x.end) for x in lines_of(data)] == [("one", 0, 5), ("two", 5, 9)]
    assert [x.text for x in lines_of(data, start=5)] == ["two"]


def test_a_long_line_is_truncated_to_its_head_and_ends_at_its_newline() -> None:
    data = b"a" * 250 + b"\nnext\n"
    long, after = lines_of(data, max_bytes=100, window=10)  # reading goes on past it
    assert (long.text, long.end, long.tags) == ("a" * 100, 251, ("truncated",))
    assert (after.text, after.start) == ("next", 251)
    # still being written: nothing yet, it is read again later
    assert lines_of(b"a" * 250, max_bytes=100) == []


def test_invalid_utf8_is_replaced_and_tagged_but_a_cut_character_is_not() -> None:
    assert decode(b"caf\xe9") == ("caf\ufffd", ("invalid_utf8",))
    assert decode("é".encode() * 3 + b"\xc3", truncated=True) == ("ééé", ("truncated",))


def record(text: str, stream: str = "stdout") -> bytes:
    return (
        json.dumps(
            {"log": text, "stream": stream, "time": "2026-11-25T17:00:00.123456789Z"}
        ).encode()
        + b"\n"
    )


def test_docker_partial_records_are_reassembled_per_stream() -> None:
    data = (
        record("a" * 16384) + record("oops\n", "stderr") + record("b" * 100 + "\n") + record("c\n")
    )
    docker = DockerRecords(max_bytes=1 << 20)
    out = [whole for line in lines_of(data, max_bytes=1 << 20) for whole in docker.feed(line)]
    assert [(x.text[:4], x.stream, x.start) for x in out] == [
        ("oops", "stderr", len(record("a" * 16384))),
        ("aaaa", "stdout", 0),
        ("c", "stdout", len(data) - len(record("c\n"))),
    ]
    assert out[1].text == "a" * 16384 + "b" * 100 and out[1].time.startswith("2026-11-25T17")


def test_docker_group_over_the_limit_is_truncated() -> None:
    docker = DockerRecords(max_bytes=10)
    data = record("x" * 8) + record("y" * 8 + "\n")
    (line,) = [w for line in lines_of(data, max_bytes=1000) for w in docker.feed(line)]
    assert (line.text, line.tags) == ("x" * 8 + "yy", ("truncated",))


def test_resume_stays_before_anything_pending() -> None:
    hub = make_parser("jupyterhub", "UTC")
    data = (
        b"[E 2026-11-25 10:00:00.000 JupyterHub web:1] boom\n"
        b"    Traceback (most recent call last):\n"
        b"    ValueError: x\n"
        b"[I 2026-11-25 10:00:01.000 JupyterHub app:1] next\n"
    )
    events, resume = events_from(iter(lines_of(data)), None, Assembler(hub, 1000), flush=False)
    assert [e.doc["message"] for e in events] == ["boom"]
    assert events[0].doc["error.type"] == "ValueError"
    assert resume == events[0].resume == data.index(b"[I")  # "next" may still get continuations
    events, resume = events_from(iter(lines_of(data)), None, Assembler(hub, 1000), flush=True)
    assert [e.doc["message"] for e in events] == ["boom", "next"] and resume == len(data)


def test_resume_waits_for_a_pending_docker_group() -> None:
    data = record("a" * 10) + record("err\n", "stderr")
    docker = DockerRecords(1000)
    events, resume = events_from(
        iter(lines_of(data, max_bytes=1000)), docker, Assembler(make_parser("raw"), 1000), False
    )
    assert resume == 0  # the stdout line is not complete: read again from its start


def test_lines_no_parser_knows_are_raw_events_not_continuations() -> None:
    hub = make_parser("jupyterhub", "UTC")
    assembler = Assembler(hub, 1000)
    first = assembler.feed(Line("[I 2026-11-25 10:00:00.000 JupyterHub app:1] a", 0, 10))
    second = assembler.feed(Line("stray output", 10, 20))
    assert first == [] and second[0].doc["message"] == "a"
    (stray,) = assembler.flush()
    assert stray.doc == {
        "message": "stray output",
        "tags": ["parse_failure"],
        "hubkeeper.failure": "unknown_format",
    }


def test_an_event_keeps_at_most_max_lines_continuations() -> None:
    assembler = Assembler(make_parser("jupyterhub", "UTC"), 10_000, max_lines=3)
    events = assembler.feed(Line("[E 2026-11-25 10:00:00.000 JupyterHub app:1] a", 0, 1))
    for n in range(10):
        events += assembler.feed(Line(f"  line {n}", n + 1, n + 2))
    events += assembler.flush()
    # capped, so that an event always ends within one read window; the rest is not lost
    assert [e.doc["message"].count("line") for e in events] == [3, 4, 3]
    assert [e.end for e in events] == [4, 8, 11]
    assert "parse_failure" in events[1].doc["tags"]


def test_a_user_servers_bare_traceback_is_one_error_event() -> None:
    assembler = Assembler(make_parser("auto", "UTC"), 1 << 20, plain=True)
    text = [
        "Traceback (most recent call last):",
        '  File "/home/jovyan/run.py", line 3, in <module>',
        "    1 / 0",
        "ZeroDivisionError: division by zero",
    ]
    for n, line in enumerate(text):
        assert assembler.feed(Line(line, n * 100, n * 100 + 99, stream="stderr")) == []
    (event,) = assembler.flush()
    assert event.doc == {
        "message": "ZeroDivisionError: division by zero",
        "error.stack_trace": "\n".join(text),
        "error.type": "ZeroDivisionError",
        "error.message": "division by zero",
    }
    assert event.text == "\n".join(text)


def test_a_final_line_without_its_newline_is_read_when_nothing_more_comes() -> None:
    data = b"one\ntwo"
    assert [line.text for line in lines_of(data)] == ["one"]
    final = list(read_lines(reader(data), 0, len(data), 100, 1000, final=True))
    assert [(line.text, line.start, line.end) for line in final] == [("one", 0, 4), ("two", 4, 7)]


def test_ascii_blocks_are_cut_as_text_into_the_same_lines_and_screened_for_secrets() -> None:
    data = (
        b"one\r\n\nGET /x?token=abc\nhttp://u:pw@h/\nvalue: \xc3\xa9\nhttp://h/ a@b\n"
        + b"y" * 150  # a long line: it and the rest of its block are not screened
        + b"\nlast"
    )
    for start in (0, 5):
        plain = list(read_lines(reader(data), start, len(data), 100, 1 << 20, True))
        screened = list(
            read_lines(reader(data), start, len(data), 100, 1 << 20, True, DEFAULT.screen)
        )
        same = [(x.text, x.start, x.end, x.tags) for x in plain]
        assert [(x.text, x.start, x.end, x.tags) for x in screened] == same
        assert not any(x.clean for x in plain)
        for line in screened:  # a block with a non-ASCII byte is not screened at all
            assert line.clean == (data.isascii() and not DEFAULT.suspect(line.text))
    ascii_only = data.replace(b"\xc3\xa9", b"e")
    screened = list(read_lines(reader(ascii_only), 0, len(ascii_only), 100, 1 << 20, True,
                               DEFAULT.screen))  # fmt: skip
    clean = {x.text[:20]: x.clean for x in screened}
    assert clean == {
        "one": True, "": True, "GET /x?token=abc": False, "http://u:pw@h/": False,
        "y" * 20: False, "value: e": True, "http://h/ a@b": True, "last": False,
    }  # fmt: skip


def test_an_event_is_clean_only_when_every_line_of_it_is() -> None:
    hub = make_parser("jupyterhub", "UTC")
    data = (
        b"[E 2026-11-25 10:00:00.000 JupyterHub app:1] a\n  Traceback\n  x: token=1\n"
        b"[E 2026-11-25 10:00:01.000 JupyterHub app:1] b\n  Traceback\n"
        b"[I 2026-11-25 10:00:02.000 JupyterHub app:1] c\n"
    )
    lines = read_lines(reader(data), 0, len(data), 1000, 1 << 20, True, DEFAULT.screen)
    events, _resume = events_from(lines, None, Assembler(hub, 1000), flush=True)
    assert [(e.doc["message"][:1], e.clean) for e in events] == [
        ("a", False), ("b", True), ("c", True),
    ]  # fmt: skip
