"""Container identity: docker inspect parsing, and DockerSpawner's escaped names mapped back."""

import pytest

from hubkeeper.config import LabelsConfig
from hubkeeper.watchers.containers.model import (
    info_from_inspect,
    parse_docker_time,
    real_name,
    spawner_escape,
    spawner_unescape,
)

LABELS = LabelsConfig()


def inspect(**host: object) -> dict:
    return {
        "Id": "abc",
        "Name": "/jupyter-a-2db",
        "Config": {
            "Image": "hubkeeper/singleuser:latest",
            "Labels": {
                LABELS.user: "a-b",
                LABELS.server: "gpu",
                LABELS.hub: "lab",
                LABELS.image: "hubkeeper/singleuser:latest",
            },
        },
        "State": {"Pid": 4242, "Running": True, "StartedAt": "2024-05-01T10:00:00.5Z"},
        "HostConfig": {"NetworkMode": "host", "Memory": 536870912, **host},
    }


def test_info_from_inspect() -> None:
    info = info_from_inspect(inspect(NanoCpus=1_500_000_000), LABELS)
    assert info is not None
    assert (info.id, info.name, info.user, info.server, info.hub) == (
        "abc",
        "jupyter-a-2db",
        "a-b",
        "gpu",
        "lab",
    )
    assert (info.pid, info.host_network, info.memory_limit) == (4242, True, 536870912)
    assert (info.cpu_quota, info.cpu_period) == (150000, 100000)
    assert info.started_at == 1714557600.5


def test_quota_from_cpu_quota_and_none_without_limit() -> None:
    limited = info_from_inspect(inspect(CpuQuota=50000, CpuPeriod=100000), LABELS)
    assert (limited.cpu_quota, limited.cpu_period) == (50000, 100000)
    unlimited = info_from_inspect(inspect(), LABELS)
    assert (unlimited.cpu_quota, unlimited.cpu_period) == (0, 0)


def test_container_without_user_label_is_not_a_user_server() -> None:
    attrs = inspect()
    del attrs["Config"]["Labels"][LABELS.user]
    assert info_from_inspect(attrs, LABELS) is None


def test_docker_times() -> None:
    assert parse_docker_time("0001-01-01T00:00:00Z") == 0.0
    assert parse_docker_time("") == 0.0
    assert parse_docker_time("2024-05-01T12:00:00.123456789+02:00") == pytest.approx(
        1714557600.123456789
    )


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [("alice", "alice"), ("a-b", "a-2db"), ("jo.doe", "jo-2edoe"), ("zoë", "zo-c3-ab")],
)
def test_escape_matches_dockerspawner(raw: str, escaped: str) -> None:
    assert spawner_escape(raw) == escaped
    assert spawner_unescape(escaped) == (raw if escaped != raw else None)
    escapism = pytest.importorskip("escapism")  # DockerSpawner's own escaping, when installed
    safe = set("abcdefghijklmnopqrstuvwxyz0123456789")
    assert escapism.escape(raw, safe, escape_char="-").lower() == escaped


def test_unescape_refuses_what_dockerspawner_never_writes() -> None:
    assert spawner_unescape("student-01") is None  # would decode to a control character
    assert spawner_unescape("team-ab") is None  # not UTF-8
    assert spawner_unescape("a-61") is None  # "a" is never escaped
    assert spawner_unescape("A-2db") is None  # upper case is never left unescaped


def test_real_name_maps_escaped_labels_back_only_to_known_names() -> None:
    assert real_name("a-2db", {"a-b", "carol"}) == "a-b"
    assert real_name("a-b", {"a-b"}) == "a-b"
    assert real_name("a-2db", {"a-2db", "a-b"}) == "a-2db"  # a raw name the hub knows wins
    assert real_name("a-2db", set()) == "a-2db"  # without the hub's names, no guessing
    assert real_name("a-2db", {"carol"}) == "a-2db"
