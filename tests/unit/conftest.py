"""Shared fixtures: hubkeeper's JSON logging captured per test."""

import json
import logging
from collections.abc import Callable, Iterator

import pytest
import structlog

from hubkeeper import log


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], list[dict]]]:
    """Configure logging at debug level into this test's stdout; return a reader of events."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    log.configure("debug")

    def read() -> list[dict]:
        out = capsys.readouterr().out
        return [json.loads(line) for line in out.splitlines()]

    yield read
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
