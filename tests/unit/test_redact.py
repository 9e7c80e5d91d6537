import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubkeeper.redact import DEFAULT, SECRET_WORDS, Redactor, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /hub/api/users?token=abc123&x=1", "GET /hub/api/users?token=***&x=1"),
        ("access_token=abc123 other", "access_token=*** other"),
        ("Authorization: token abc123", "Authorization: token ***"),
        ("authorization: Bearer abc.def-123", "authorization: Bearer ***"),
        ("Authorization: Basic dXNlcjpwdw==", "Authorization: Basic ***"),
        ("{'Authorization': 'token abc123', 'X': 1}", "{'Authorization': 'token ***', 'X': 1}"),
        ('{"authorization": "Bearer abc123"}', '{"authorization": "Bearer ***"}'),
        ("https://alice:s3cr3t@hub.example.org/x", "https://alice:***@hub.example.org/x"),
        ("postgresql://hub:p%40ss@127.0.0.1:5432/db", "postgresql://hub:***@127.0.0.1:5432/db"),
    ],
)
def test_credentials_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "plain message without secrets",
        "http://127.0.0.1:8000/hub/api/users?offset=50&limit=50",
        "user alice@example.org logged in",
        "tokens issued: 3",
    ],
)
def test_harmless_text_is_unchanged(text: str) -> None:
    assert redact(text) == text


def test_several_secrets_in_one_string() -> None:
    text = "url=https://u:pw1@h/?token=t1 header Authorization: Bearer t2"
    redacted = redact(text)
    for secret in ("pw1", "t1", "t2"):
        assert secret not in redacted


def test_secrets_are_masked_in_every_field() -> None:
    doc = DEFAULT.value({"message": "GET /x?token=abc", "json": {"u": ["https://u:pw@h/"]}, "n": 1})
    assert doc == {"message": "GET /x?token=***", "json": {"u": ["https://u:***@h/"]}, "n": 1}


def test_the_fast_secret_check_misses_nothing_redact_would_mask() -> None:
    for text in (
        '{"@timestamp":"t","m":"GET /x?access_token=abc"}',
        '{"m":"AUTHORIZATION: Bearer abc"}',
        '{"m":"postgresql://hub:pw@db/hub"}',
    ):
        assert DEFAULT.suspect(text) and DEFAULT.value(json.loads(text)) != json.loads(text)
    assert not DEFAULT.suspect('{"@timestamp":"t","http.request.referrer":"http://h/x","u":"a@b"}')


_EXTRA = ["private-session", "session_key"]


@pytest.mark.parametrize(
    ("redactor", "words"), [(DEFAULT, SECRET_WORDS), (Redactor(_EXTRA), (*SECRET_WORDS, *_EXTRA))]
)
def test_every_spelling_of_every_secret_word_is_suspect_and_masked(
    redactor: Redactor, words: tuple[str, ...]
) -> None:
    """The fast check has few probes (each one pass over a block read), and misses none."""
    for word in words:
        for separator in ("", "-", "_", "."):
            spelled = separator.join(word.replace("-", "_").split("_"))
            for text in (f"GET /x?{spelled}=abc", f"{spelled.upper()}: abc"):
                assert redactor.suspect(text) and redactor.screen(text), text
                assert "abc" not in redactor.text(text), text
    assert "priva" not in DEFAULT._probes  # every spelling of private_key has "key"


_PIECES = st.sampled_from(
    ["token", "TOKEN", "passw", "Key", "xsrf", "cookie", "priva", "crede", "secret", "autho",
     "://", "u:pw@", ":", "@", "/", " ", "\t", "\r", "=", "a", "x", "\x1c", "é", "K"]
)  # fmt: skip
_TEXT = st.lists(st.lists(_PIECES, max_size=8).map("".join), min_size=1, max_size=12)


@given(lines=_TEXT)
def test_screening_many_lines_at_once_flags_exactly_the_suspect_ones(lines: list[str]) -> None:
    text = "\n".join(lines)
    if not text.isascii():  # the screen is for ASCII text only
        return
    hits = DEFAULT.screen(text)
    assert hits == sorted(hits)
    start = 0
    for line in lines:
        flagged = any(start <= hit < start + len(line) for hit in hits)
        assert flagged == DEFAULT.suspect(line), line
        start += len(line) + 1
