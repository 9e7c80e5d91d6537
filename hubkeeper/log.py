"""Structured logging: JSON lines on stdout, secrets redacted from every event.

Records from the standard library's ``logging`` (urllib3, APScheduler, docker, ...) are
routed through the same pipeline, so every line on stdout has the same shape.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

from hubkeeper.redact import Redactor


class _RedactSecrets:
    """Processor: mask secrets in every value of an event (by key and by value)."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        return self.redactor.value(event_dict)


class _NamedPrintLogger(structlog.PrintLogger):
    """Prints to the current ``sys.stdout``, remembering the name given to :func:`get_logger`."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(sys.stdout)
        self.name = name


def _add_logger_name(
    logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    name = getattr(logger, "name", None)
    if name is not None:
        event_dict.setdefault("logger", name)
    return event_dict


class _ToStructlog(logging.Handler):
    """Forward standard-library log records into the structlog pipeline."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            get_logger(record.name).log(
                record.levelno, record.getMessage(), exc_info=record.exc_info or False
            )
        except Exception:
            self.handleError(record)


def configure(level: str, secret_words: Iterable[str] = ()) -> None:
    """Log events at ``level`` (debug, info, warning, error) and above as JSON to stdout,
    with secrets masked (:mod:`hubkeeper.redact`, plus ``secret_words``)."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _RedactSecrets(Redactor(secret_words)),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level.lower()),
        logger_factory=_NamedPrintLogger,
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not isinstance(h, _ToStructlog)]
    root.addHandler(_ToStructlog())
    root.setLevel(level.upper())
    # APScheduler reports every job run at info, and a cycle skipped behind a slow one
    # (which max_instances=1 is for) as a warning.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A structlog logger whose events carry ``logger=name``."""
    return structlog.get_logger(name)
