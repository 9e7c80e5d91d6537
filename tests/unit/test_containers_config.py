"""The [containers] section and the export-containers command."""

from pathlib import Path

import pytest

from hubkeeper.cli import main
from hubkeeper.config import ConfigError, Secret
from hubkeeper.loader import from_dict, load


def test_defaults() -> None:
    section = from_dict({}).containers
    assert (section.endpoint.listen, section.endpoint.port) == ("127.0.0.1", 9102)
    assert section.docker_url is None  # [docker] url
    assert (section.source, section.reconcile, section.prtg_top) == ("auto", "full", 5)
    assert section.hub_token is None


def test_endpoint_table_without_port_keeps_9102(tmp_path: Path) -> None:
    (tmp_path / "prtg.token").write_text("prtg-token-77\n")
    data = {"containers": {"endpoint": {"token_file": "prtg.token"}}}
    endpoint = from_dict(data, base=tmp_path).containers.endpoint
    assert endpoint.port == 9102
    assert endpoint.token == Secret("prtg-token-77")


def test_hub_token_from_file_or_environment(tmp_path: Path) -> None:
    (tmp_path / "containers.token").write_text("from-file\n")
    path = tmp_path / "hubkeeper.toml"
    path.write_text('[containers]\nhub_token_file = "containers.token"\n')
    assert load(path, environ={}).containers.hub_token == Secret("from-file")
    environ = {"HUBKEEPER_CONTAINERS_HUB_TOKEN": "from-env"}
    assert load(path, environ=environ).containers.hub_token == Secret("from-env")
    assert "from-env" not in repr(load(path, environ=environ))


def test_environment_overrides_scalars() -> None:
    environ = {"HUBKEEPER_CONTAINERS_SOURCE": "api", "HUBKEEPER_CONTAINERS_PRTG_TOP": "7"}
    section = from_dict({}, environ=environ).containers
    assert (section.source, section.prtg_top) == ("api", 7)


def test_every_problem_is_named() -> None:
    data = {
        "containers": {
            "source": "proc",
            "prtg_top": 21,
            "cache_seconds": -1,
            "docker_url": "/var/run/docker.sock",
            "prtg_memory_warning": 99,
            "prtg_memory_error": 90,
            "labels": {},
        }
    }
    with pytest.raises(ConfigError) as error:
        from_dict(data)
    problems = "\n".join(error.value.problems)
    assert 'containers.source: got "proc", expected "auto" or "cgroup" or "api"' in problems
    assert "containers.prtg_top: got 21, expected a number of top users (0-20)" in problems
    assert "containers.cache_seconds: got -1, expected a number of seconds >= 0" in problems
    assert 'containers.docker_url: got "/var/run/docker.sock", expected a Docker engine URL' in (
        problems
    )
    assert "containers.prtg_memory_warning: expected at most prtg_memory_error" in problems
    assert "containers.labels: unknown key" in problems


def test_command_is_listed_and_refuses_a_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "export-containers" in capsys.readouterr().out
    bad = tmp_path / "hubkeeper.toml"
    bad.write_text("[containers]\nresync_seconds = 0\n")
    assert main(["export-containers", "--config", str(bad)]) == 2
    assert "containers.resync_seconds: got 0" in capsys.readouterr().err
