"""What the Elasticsearch output says when a request is refused: the status and the
server's own error, nothing of the request."""

import pytest

from hubkeeper.shippers.elasticsearch import refusal

UNAUTHENTICATED = {
    "error": {
        "root_cause": [{"type": "security_exception", "reason": "unable to authenticate"}],
        "type": "security_exception",
        "reason": "unable to authenticate user [ship] for REST request [/_bulk]",
    },
    "status": 401,
}


@pytest.mark.parametrize(
    ("status", "answer", "expected"),
    [
        (401, UNAUTHENTICATED, "HTTP 401: security_exception: unable to authenticate user "
                               "[ship] for REST request [/_bulk]"),
        (405, {"error": "Incorrect HTTP method for uri [/]", "status": 405},
         "HTTP 405: Incorrect HTTP method for uri [/]"),
        (503, {"error": {"type": "unavailable_shards_exception"}},
         "HTTP 503: unavailable_shards_exception: "),
        (502, None, "HTTP 502"),  # a proxy's HTML page
        (500, ["not", "an", "object"], "HTTP 500"),
    ],
)  # fmt: skip
def test_a_refusal_names_the_status_and_the_servers_error(
    status: int, answer: object, expected: str
) -> None:
    assert refusal(status, answer) == expected


def test_a_long_reason_is_cut() -> None:
    message = refusal(400, {"error": {"type": "x", "reason": "r" * 5000}})
    assert message == "HTTP 400: x: " + "r" * 300
