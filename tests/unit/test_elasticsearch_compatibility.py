"""The Elasticsearch client's compatibility mode follows the cluster's major version."""

import pytest

from hubkeeper.shippers.elasticsearch import lowest_major, media_type


@pytest.mark.parametrize(
    ("subtype", "major", "expected"),
    [
        ("json", 8, "application/vnd.elasticsearch+json; compatible-with=8"),
        ("x-ndjson", 8, "application/vnd.elasticsearch+x-ndjson; compatible-with=8"),
        ("json", 9, "application/vnd.elasticsearch+json; compatible-with=9"),
        ("json", None, "application/json"),
        ("x-ndjson", None, "application/x-ndjson"),
    ],
)  # fmt: skip
def test_the_compatibility_version_is_the_servers_or_none_until_known(
    subtype: str, major: int | None, expected: str
) -> None:
    assert media_type(subtype, major) == expected


def test_a_mixed_cluster_gets_the_lowest_major() -> None:
    nodes = {"nodes": {"a": {"version": "9.2.0"}, "b": {"version": "8.19.21"}}}
    assert lowest_major(nodes) == 8
    assert lowest_major({"nodes": {"a": {"version": "9.2.0"}}}) == 9
