"""The native fast path for NGINX access logs (``native/``, built into
``hubkeeper.shippers._native``) writes exactly the records the Python path writes, and
leaves every line it does not take to it: generated files of access lines of every shape
(times that are no instant, zones, quotes, escapes, secrets, long and non-ASCII lines)
between continuation lines and junk, read in windows of every size."""

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubkeeper.config import ShipperSource
from hubkeeper.shippers import sources
from hubkeeper.shippers.sources import Files, Settings, make_sources
from hubkeeper.shippers.store import Record, Registry

# What NGINX writes in a field: printable ASCII, a double quote as \x22; and worse.
USUAL_TEXT = st.lists(st.sampled_from([*" -_./?=&:;()abcXYZ019", "\\x22"]), max_size=10)
ODD_TEXT = st.text(st.sampled_from([*' -_./?=&:"\\abcXYZ019', "\t", "\x1c", "\x7f"]), max_size=10)
ZONES = st.sampled_from([f"{sign}{hhmm}" for sign in "+-" for hhmm in ("0000", "0530", "9999")])


def two(numbers: range) -> st.SearchStrategy[str]:
    return st.sampled_from([f"{n:02d}" for n in numbers])


@st.composite
def access_line(draw: st.DrawFn, usual: bool) -> str:
    """An access line in the ``combined`` format: ``usual``, one as NGINX writes them (the
    fast path's); else often not quite (times that are no instant, odd fields, characters
    NGINX would have escaped, secrets)."""

    def pick(*options: str) -> str:
        return draw(st.sampled_from(options))

    if usual:
        text = USUAL_TEXT.map("".join)
        day = draw(two(range(1, 29)))
        hour, minute, second = (draw(two(range(end))) for end in (24, 60, 60))
        month, year = pick("Jan", "Feb", "Dec"), pick("1970", "2026")
        uri = pick("/hub/api", "/x?a=1&b=", "/p")
        status, size = pick("200", "007"), draw(st.from_regex(r"-|[0-9]{1,18}", fullmatch=True))
        ip, user, tail = pick("127.0.0.1", "::1"), pick("-", "ann"), ""
    else:
        text = ODD_TEXT
        day, hour, minute, second = (draw(two(range(end))) for end in (33, 25, 61, 61))
        month = pick("Jan", "Feb", "Foo", "jan", "J_n")
        year = pick("0000", "0001", "0999", "9999")
        uri = pick("/?token=s", "http://u:pw@h/", "/?API_KEY=1", "/?PassWord=p", "/?_xsrf=2", "/p")
        status = draw(st.text("0123456789x", max_size=4))
        size = draw(st.from_regex(r"[0-9]{1,20}", fullmatch=True))
        ip, user, tail = pick("127.0.0.1", ""), pick("-", ""), pick("", " extra", '"')
    when = f"{day}/{month}/{year}:{hour}:{minute}:{second} {draw(ZONES)}"
    requests = st.sampled_from(["-", "", f"GET {uri} HTTP/1.1"])
    request = draw(st.one_of(requests, text.map(lambda t: f"GET {uri}{t} HTTP/2.0")))
    return f'{ip} - {user} [{when}] "{request}" {status} {size} "{draw(text)}" "{draw(text)}"{tail}'


OTHER_LINE = st.one_of(
    st.sampled_from(["    at x", "Traceback (most recent call last):", "ValueError: x", "}"]),
    st.sampled_from(["", " ", "café", "x" * 150]),  # (150: over the smaller max_event_bytes)
    ODD_TEXT,
)
RUN = st.one_of(  # runs of usual lines between others, as in a real access log
    st.lists(access_line(usual=True), min_size=1, max_size=8),
    st.lists(st.one_of(access_line(usual=False), OTHER_LINE), min_size=1, max_size=2),
)
FILE = st.lists(RUN, min_size=1, max_size=8).map(lambda runs: sum(runs, []))


def records(
    folder: Path, native: bool, window: int, max_bytes: int, quiet: bool, final: bool
) -> list[Record]:
    """Every record of ``folder/access.log``, read by the fast path and the Python path, or
    by the Python path alone."""
    source = ShipperSource(
        name="access", paths=[str(folder / "access.log")], parser="nginx_access", timezone="UTC"
    )
    options = Settings(
        read_window=window, max_event_bytes=max_bytes, host_name="h",
        multiline_timeout=0.0 if quiet else 3600.0,
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sources, "now_iso", lambda: "2026-12-03T00:00:00.000Z")  # (no time)
        if not native:
            patch.setattr(sources, "_native", None)
        registry = Registry(folder / f"registry-{native}.json")
        files = Files(make_sources([source], None), registry, options, {})
        files.scan()
        found: list[Record] = []
        for _ in range(1000):
            read, moves = files.read(4000, final=final)
            files.advance(moves)
            if not moves:
                break
            found += read
        files.close()
    return found


def test_the_native_part_is_built() -> None:
    assert sources._native is not None, "pip install builds native/ (with cargo)"


@settings(max_examples=250, deadline=None, derandomize=True)  # the same cases each run
@given(
    FILE,
    st.booleans(),
    st.sampled_from([64, 300, 1 << 16, 1 << 16]),  # 64: no line fits; 300: a few do
    st.sampled_from([120, 1 << 20, 1 << 20]),
    st.booleans(),
    st.booleans(),
)
def test_the_native_path_writes_what_the_python_path_writes(
    lines: list[str], newline: bool, window: int, max_bytes: int, quiet: bool, final: bool
) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        (folder / "access.log").write_text("\n".join(lines) + "\n" * newline, "utf-8")
        python = records(folder, False, window, max_bytes, quiet, final)
        assert records(folder, True, window, max_bytes, quiet, final) == python


def test_usual_lines_take_the_fast_path_and_others_the_python_path(tmp_path: Path) -> None:
    """Usual lines are written natively (one that was not would pass the test above, only
    slowly); the Python path takes a line with a secret up to the next usual one."""
    usual = '127.0.0.1 - ann [03/Dec/2026:13:16:01 +0100] "GET /lab?x=1 HTTP/1.1" 200 5 "-" "M"\n'
    secret = usual.replace("x=1", "token=abc")
    data = (usual * 2 + secret + usual).encode()
    events, resume, until = sources._native.access_events(
        data, [b"token"], 0, len(data), True, 1 << 20, "k" * 16, b',"log.offset":',
        "logs-nginx.access-", b'"nginx.access"',
    )  # fmt: skip
    n = len(usual)
    assert [event[:4] for event in events] == [
        (start, start + n, "logs-nginx.access-2026.12.03", f"{'k' * 16}{start:012x}")
        for start in (0, n)
    ]
    assert (resume, until) == (2 * n, 4 * n + len(secret) - n)
    (tmp_path / "access.log").write_bytes(data)
    native = records(tmp_path, True, 1 << 16, 1 << 20, True, True)
    assert native == records(tmp_path, False, 1 << 16, 1 << 20, True, True)
    assert b"abc" not in b"".join(record.lines for record in native)
