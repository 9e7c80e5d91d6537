"""Every regular expression that runs on shipped text runs in linear time on hostile input.

The patterns are collected from the modules (a new one is checked without being listed
here), then run on 1 MiB strings made to make a backtracking engine work: runs of one
character class, a separator repeated, and the prefix of a line that the pattern matches
repeated without its end. The time is compared with a plain scan of as much text (a
Python loop over its characters): a linear pattern takes a small multiple of it, a
quadratic one thousands of times more. Every input runs at 16 KiB, then 64 KiB (so that a
quadratic pattern fails in a moment instead of running for hours), and the worst ones at
1 MiB. No wall-clock bound: a ratio, each the best of three runs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from types import ModuleType

import pytest

import hubkeeper.redact
from hubkeeper.shippers import framing, parsers, sources

MODULES: list[ModuleType] = [hubkeeper.redact, parsers, framing, sources]
# Patterns the code only ever matches at the start of a line (``.match``): one start
# position, so they are run that way here. Every other pattern is scanned (``finditer``).
ANCHORED = {
    "_CONTINUATION", "_EXCEPTION_LINE", "_TORNADO", "_REQUEST", "_CHP", "_CHP_REQUEST",
    "_NGINX_ACCESS", "_NGINX_ERROR", "_STAMP", "_SCHEME", "_PLAIN_VALUE", "_QUOTED_VALUE",
    "_LINE_VALUE", "_WEB_WARNING", "_BY_FIRST_WORD", "_BY_ENDING",
}  # fmt: skip
# Lines of every format the shipper reads; each pattern must match one of them, and the
# start of that match, repeated, is one of its hostile inputs.
CORPUS = [
    "[I 2026-11-25 17:16:07.880 JupyterHub log:192] 200 GET /hub/api/users (a@127.0.0.1) 5.23ms",
    "[I 2026-11-25 17:16:07.880 JupyterHub base:1000] User alice took 3.6 seconds to start",
    "[I 2026-11-25 17:16:07.880 JupyterHub app:2000] User alice server took 0.8 seconds to stop",
    "User alice server stopped with exit code: ExitCode=137, Error='', FinishedAt=x",
    "alice:gpu appears to have stopped while the Hub was down",
    "Unhandled error starting alice's server: timeout",
    "User logged in: alice",
    "User logged out: alice",
    "User alice:gpu took 3.6 seconds to start",
    "Failed login for alice",
    "Error starting alice's server: timeout",
    "Not starting alice's server gpu: too many servers",
    "Received unhandled user_options for alice: {'image': 'x'}",
    "Adding missing route for /user/alice/",
    "Created container jupyter-alice (id: 0123abc) from image hubkeeper/singleuser:latest",
    "Found existing container jupyter-alice (id: 0123abc)",
    "Starting container jupyter-alice (id: 0123abc)",
    "Stopping container jupyter-alice (id: 0123abc)",
    "Removing container that should have been cleaned up: jupyter-alice (id: 0123abc)",
    "Removing container 0123abc",
    "Container 'jupyter-alice' is gone",
    "Container 'jupyter-alice' is on unhealthy node",
    "Container not found: jupyter-alice",
    "alice still running",
    "alice's server failed to start in 60 seconds, giving up.",
    "400 POST /hub/api/users/bob/server (127.0.0.1): Specifying image to launch is not allowed",
    "17:16:07.880 [ConfigProxy] info: 200 GET /user/alice/api/status",
    "2026-11-25T17:16:07.880Z [ConfigProxy] \x1b[32minfo\x1b[39m: Adding route /user/alice",
    '127.0.0.1 - alice [25/Nov/2026:17:16:07 +0000] "GET /hub/ HTTP/1.1" 200 512 "-" "curl/8"',
    "2026/11/25 17:16:07 [error] 12#12: *5 connect() failed, client: 127.0.0.1, server: _, "
    'request: "GET / HTTP/1.1", upstream: "http://127.0.0.1:8001/", host: "x"',
    "Traceback (most recent call last):",
    '  File "x.py", line 1, in <module>',
    "ValueError: bad value",
    "2026-11-25T17:16:07.880Z",
    "GET /hub/api/users?token=abc123&_xsrf=x Authorization: token abc",
    '{"password": "p", "Cookie": "a=b; c=d", \'api_key\': \'k\'}',
    "https://alice:s3cret@hub.example.org/x",
]
GENERIC = [
    "a", " ", "\t", "1", "a.", "a:", "a=", "a@", "a-", "::", "//", "%3D", '"', "'", "\\",
    "\\\"", "{", "[", "(", ")", "\x1b[", "://a", "://a:b", "token", "token ", "token=",
    "Error", "User ", "stopped ", "[I ", "200 GET ", "1.1.", "\u00e9",
]  # fmt: skip
SIZES = [1 << 14, 1 << 16]  # every input
LARGEST, WORST = 1 << 20, 3  # the worst inputs so far, at 1 MiB
# pattern / plain scan: linear ones stay under 30 here, quadratic ones pass 8000 at 16 KiB
MAX_RATIO = 100.0


def collected() -> Iterator[tuple[str, re.Pattern[str]]]:
    """Every compiled pattern in the modules' globals, in tables of them, and in the
    default redactor, once each."""
    seen: set[str] = set()

    def visit(value: object, name: str, depth: int = 0) -> Iterator[tuple[str, re.Pattern[str]]]:
        if isinstance(value, re.Pattern) and value.pattern not in seen:
            seen.add(value.pattern)
            yield name, value
        elif depth < 3 and isinstance(value, list | tuple | dict):
            items = value.values() if isinstance(value, dict) else value
            for item in items:
                yield from visit(item, name, depth + 1)

    for module in MODULES:
        for name, value in vars(module).items():
            yield from visit(value, name)
    for name, value in vars(hubkeeper.redact.DEFAULT).items():
        yield from visit(value, name)


PATTERNS = list(collected())


def hostile(pattern: re.Pattern[str]) -> list[str]:
    """The generic runs, and the starts of what the pattern matches in the corpus."""
    found = [m.group(0) for line in CORPUS if (m := pattern.search(line)) and m.group(0)]
    prefixes = {text[:cut] for text in found for cut in (1, len(text) // 2, len(text) - 1)}
    return GENERIC + sorted(p for p in prefixes if p)


def run(pattern: re.Pattern[str], anchored: bool, text: str) -> float:
    started = time.perf_counter()
    if anchored:
        pattern.match(text)
    else:
        for _ in pattern.finditer(text):
            pass
    return time.perf_counter() - started


def scan(size: int) -> float:
    """The best of three plain scans of ``size`` characters, measured next to the pattern's
    run (a baseline taken once, in a quiet moment, would turn a busy moment into a ratio)."""
    text = "a" * size
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in text:
            pass
        best = min(best, time.perf_counter() - started)
    return best


def ratio(pattern: re.Pattern[str], anchored: bool, piece: str, size: int) -> float:
    text = (piece * (size // len(piece) + 1))[:size]
    return min(run(pattern, anchored, text) for _ in range(3)) / scan(size)


def test_patterns_are_collected() -> None:
    names = {name for name, _ in PATTERNS}
    assert {"_USERINFO", "_name", "_NGINX_ACCESS", "_BY_FIRST_WORD", "_CONTINUATION"} <= names


@pytest.mark.parametrize(("name", "pattern"), PATTERNS, ids=[n for n, _ in PATTERNS])
def test_each_pattern_matches_something_in_the_corpus(name: str, pattern: re.Pattern[str]) -> None:
    """So that the hostile inputs include the pattern's own prefixes (add a line if not)."""
    assert any(pattern.search(line) for line in CORPUS), name


@pytest.mark.parametrize(("name", "pattern"), PATTERNS, ids=[n for n, _ in PATTERNS])
def test_each_pattern_is_linear_on_hostile_input(name: str, pattern: re.Pattern[str]) -> None:
    anchored = name in ANCHORED
    ratios: dict[str, float] = {}
    for size in SIZES:
        for piece in hostile(pattern):
            ratios[piece] = ratio(pattern, anchored, piece, size)
            assert ratios[piece] < MAX_RATIO, (name, size, piece, ratios[piece])
    for piece in sorted(ratios, key=ratios.__getitem__)[-WORST:]:
        found = ratio(pattern, anchored, piece, LARGEST)
        assert found < MAX_RATIO, f"{name}: {found:.0f}x a plain scan on 1 MiB of {piece!r}"
