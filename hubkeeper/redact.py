"""Secrets out of everything hubkeeper writes or ships: its own log events and the log
documents of the hub, the proxy, NGINX and user servers (whose output is untrusted).

Two rules, one module:

- **By key**: in a mapping, at any depth, the value of a key whose name ends with a secret
  word (``token``, ``password``, ``passwd``, ``secret``, ``authorization``, ``cookie``,
  ``xsrf``, ``api_key``, ``private_key``, ``credential(s)``, and configured additions;
  ``-``, ``_`` and ``.`` ignored, case ignored) is replaced by ``***`` whatever its type:
  ``api_token``, ``X-JupyterHub-Api-Token``, ``_xsrf``, ``headers.Authorization``.
- **By value**, in every string: ``name=value``, ``name%3Dvalue`` and ``name: value``
  where the name ends with a secret word (query strings in ``url.original``,
  ``url.query`` and messages, ``Authorization:``/``X-...-Token:`` headers in text, JSON
  or Python dicts printed as text), keeping an authorization scheme (``token``,
  ``Bearer``, ``Basic``) and masking a quoted value up to its closing quote and a
  ``Cookie`` header up to the end of the line; and the password of URL userinfo
  (``scheme://user:password@host``).

Every pattern is led by a literal (a secret word, ``://``) and every repeat is bounded or
runs over a character class that the next literal cannot extend, so the time taken is
linear in the length of the text, whatever the text (checked by
``tests/unit/test_linear_patterns.py``). A cheap substring test (:meth:`Redactor.suspect`)
skips all of it for text that has none of the secret words; :meth:`Redactor.screen` does
that test for many lines at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"
SECRET_WORDS = (
    "token", "password", "passwd", "secret", "authorization", "cookie", "xsrf", "api_key",
    "private_key", "credential", "credentials",
)  # fmt: skip
_SEPARATORS = str.maketrans("", "", "-_.")
_SCHEME = re.compile(r"(?:token|bearer|basic)[ \t]{1,16}", re.IGNORECASE)
_PLAIN_VALUE = re.compile(r"[^\s'\",;&]+")
_QUOTED_VALUE = {'"': re.compile(r'(?:[^"\\]|\\.)*'), "'": re.compile(r"(?:[^'\\]|\\.)*")}
_LINE_VALUE = re.compile(r"[^\r\n'\"]+")  # a cookie header: every pair up to the line's end
_USERINFO = re.compile(r"(://[^\s/?#@:]*:)[^\s/?#@]+@")


class Secret:
    """A secret string that never appears in ``repr``, ``str`` or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _normal(word: str) -> str:
    return word.lower().translate(_SEPARATORS)


def _word_pattern(word: str) -> str:
    """A secret word as written in text, with or without a separator between its parts
    (``api_key``, ``api-key``, ``apikey``)."""
    return "[-_.]?".join(re.escape(part) for part in re.split(r"[-_.]", word.lower()) if part)


def _probes(words: Iterable[str]) -> tuple[str, ...]:
    """Substrings such that every spelling of every word contains one (a word's parts
    stand whole in each of its spellings): its longest part, cut short (``passw`` serves
    ``password`` and ``passwd``), leaving out those the others make needless (``priva``:
    ``private_key`` has ``key``), as each probe is one more pass over every block read."""
    parts = [re.split(r"[-_.]", word) for word in words]
    probes = {max(reversed(split), key=len)[:5] for split in parts}
    for probe in sorted(probes, key=lambda probe: (-len(probe), probe)):
        rest = probes - {probe}
        if all(any(other in part for other in rest for part in split) for split in parts):
            probes = rest
    return tuple(sorted(probes))


class Redactor:
    """Masks secrets by key and by value; ``extra_words`` adds secret words."""

    def __init__(self, extra_words: Iterable[str] = ()) -> None:
        written = sorted({*SECRET_WORDS, *(w.lower() for w in extra_words if w)}, key=len)
        self.words = tuple({_normal(word) for word in written})
        self._probes = _probes(written)
        self._name = re.compile(
            "(" + "|".join(_word_pattern(word) for word in reversed(written)) + ")"
            r"(['\"]?)[ \t]{0,16}(=|:|%3[dD])[ \t]{0,16}",
            re.IGNORECASE,
        )

    # --- keys ------------------------------------------------------------------------

    def secret_key(self, key: str) -> bool:
        """Whether a mapping key names a secret (its name ends with a secret word)."""
        return _normal(key).endswith(self.words)

    # --- text ------------------------------------------------------------------------

    @property
    def probes(self) -> tuple[str, ...]:
        """Lowered substrings, one of which text must hold to be :meth:`suspect` (but for a
        password in a URL)."""
        return self._probes

    def suspect(self, text: str) -> bool:
        """Whether ``text`` may hold anything :meth:`text` masks (a fast test)."""
        return any(map(text.lower().__contains__, self._probes)) or (
            "://" in text and _USERINFO.search(text) is not None
        )

    def screen(self, text: str) -> list[int]:
        """Where in ``text`` (many lines at once) anything :meth:`suspect` looks for
        starts, in order: a line with no position in it holds nothing to mask. For ASCII
        text only: lowering other text can change its length, and turn a character (the
        Kelvin sign) into a letter of a secret word."""
        lowered = text.lower()
        hits: list[int] = []
        for probe in self._probes:
            found = lowered.find(probe)
            while found >= 0:
                hits.append(found)
                found = lowered.find(probe, found + 1)
        if "://" in text and "@" in text:
            hits += [found.start() for found in _USERINFO.finditer(text)]
        hits.sort()
        return hits

    def text(self, text: str) -> str:
        """``text`` with secret values and URL passwords masked."""
        if not self.suspect(text):
            return text
        pieces: list[str] = []
        done = 0
        for found in self._name.finditer(text):
            if found.start() < done:
                continue  # inside a value masked already
            span = self._value_span(text, found)
            if span is None:
                continue
            start, end = span
            pieces += [text[done:start], MASK]
            done = end
        pieces.append(text[done:])
        masked = "".join(pieces)
        return _USERINFO.sub(rf"\1{MASK}@", masked) if "://" in masked else masked

    def _value_span(self, text: str, found: re.Match[str]) -> tuple[int, int] | None:
        """Where the value after a secret name lies (a scheme word is kept)."""
        position = found.end()
        quote = text[position : position + 1]
        if quote in _QUOTED_VALUE:
            position += 1
        if found.group(1).lower().startswith("auth"):  # keep ``token``/``Bearer``/``Basic``
            scheme = _SCHEME.match(text, position)
            position = scheme.end() if scheme is not None else position
        if quote in _QUOTED_VALUE:
            value = _QUOTED_VALUE[quote].match(text, position)
        elif "cookie" in found.group(1).lower() and found.group(3) == ":":
            value = _LINE_VALUE.match(text, position)
        else:
            value = _PLAIN_VALUE.match(text, position)
        if value is None or value.end() == position:
            return None
        return position, value.end()

    # --- values ----------------------------------------------------------------------

    def value(self, value: Any) -> Any:
        """A JSON-like value with secrets masked by key and by value, at any depth; any
        other object as its redacted ``repr`` (what a JSON renderer would print)."""
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, Secret):
            return MASK
        if isinstance(value, Mapping):
            return {
                key: MASK if isinstance(key, str) and self.secret_key(key) else self.value(item)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(item) for item in value]
        return self.text(repr(value))


DEFAULT = Redactor()


def redact(text: str) -> str:
    """``text`` with the default secret words' values and URL passwords masked."""
    return DEFAULT.text(text)
