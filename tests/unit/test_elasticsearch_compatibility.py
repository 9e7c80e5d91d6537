"""The Elasticsearch client's compatibility mode follows the cluster's major version."""

import pytest

from hubkeeper.shippers.elasticsearch import compatible_mimetype, lowest_major

VND_JSON_9 = "application/vnd.elasticsearch+json; compatible-with=9"
VND_NDJSON_9 = "application/vnd.elasticsearch+x-ndjson; compatible-with=9"


@pytest.mark.parametrize(
    ("value", "major", "expected"),
    [
        (VND_JSON_9, 8, "application/vnd.elasticsearch+json; compatible-with=8"),
        (VND_NDJSON_9, 8, "application/vnd.elasticsearch+x-ndjson; compatible-with=8"),
        (VND_JSON_9, 9, VND_JSON_9),
        (VND_JSON_9, None, "application/json"),
        (VND_NDJSON_9, None, "application/x-ndjson"),
        ("text/plain", 8, "text/plain"),
        (f"{VND_JSON_9}, text/plain", None, "application/json, text/plain"),
    ],
)  # fmt: skip
def test_the_compatibility_version_is_the_servers_or_none_until_known(
    value: str, major: int | None, expected: str
) -> None:
    assert compatible_mimetype(value, major) == expected


def test_a_mixed_cluster_gets_the_lowest_major() -> None:
    nodes = {"nodes": {"a": {"version": "9.2.0"}, "b": {"version": "8.19.21"}}}
    assert lowest_major(nodes) == 8
    assert lowest_major({"nodes": {"a": {"version": "9.2.0"}}}) == 9
