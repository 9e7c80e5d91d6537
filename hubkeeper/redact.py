"""Scrub credentials out of free text (log messages, error strings, URLs)."""

from __future__ import annotations

import re

MASK = "***"

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Authorization: token X / Bearer X / Basic X, also as a repr'd header dict entry.
    (
        re.compile(
            r"""(\bauthorization['"]?\s*[:=]\s*['"]?(?:token|bearer|basic)\s+)[^\s'",;]+""",
            re.IGNORECASE,
        ),
        rf"\1{MASK}",
    ),
    # token=X, access_token=X, api_token=X (query strings, key=value text).
    (re.compile(r"(\b\w*token=)[^\s&'\",;]+", re.IGNORECASE), rf"\1{MASK}"),
    # scheme://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s/?#@:]*:)[^\s/?#@]+@", re.IGNORECASE), rf"\1{MASK}@"),
]


def redact(text: str) -> str:
    """Return ``text`` with tokens, authorization headers and URL passwords masked."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
