import argparse
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from hubkeeper import __version__
from hubkeeper.cli import build_parser, exit_code, main
from hubkeeper.config import ConfigError, EndpointConfig
from hubkeeper.daemon import Daemon
from hubkeeper.files import LockHeld, try_lock
from hubkeeper.watchers.culler import daemon as culler_daemon

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "hubkeeper.example.toml"


def test_example_config_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out.strip().endswith(": ok")


def test_broken_config_names_every_problem_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "hubkeeper.toml"
    broken.write_text('[hub]\ntimeout = "ten"\ntypo = 1\n[nginx]\npublic_port = 0\n')
    assert main(["check-config", str(broken)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "hub.typo: unknown key, expected one of: "
        "backoff, backoff_max, page_size, retries, timeout, token_file, url",
        'hub.timeout: got "ten", expected a number of seconds > 0',
        "nginx.public_port: got 0, expected a TCP port (1-65535)",
    ]


def test_invalid_toml_reports_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "hubkeeper.toml"
    broken.write_text("[hub]\nurl = \n")
    assert main(["check-config", str(broken)]) == 2
    assert "(at line 2, column 7)" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == __version__


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "check-config" in out and "up" in out and "version" in out


def test_version_option_and_python_dash_m() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hubkeeper", "--version"], capture_output=True, text=True
    )
    assert (done.returncode, done.stdout) == (0, f"hubkeeper {__version__}\n")


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield child
                yield from _subcommands(child)


def test_every_subcommand_has_a_description_line_in_its_help() -> None:
    commands = list(_subcommands(build_parser()))
    assert {"hubkeeper cull", "hubkeeper alerts render", "hubkeeper dashboards load"} <= {
        command.prog for command in commands
    }

    def described(command: argparse.ArgumentParser) -> bool:
        words = (command.description or "").split()
        return bool(words) and " ".join(words) in " ".join(command.format_help().split())

    assert [command.prog for command in commands if not described(command)] == []


def _events(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_a_daemon_with_an_invalid_config_logs_fatal_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], json_logs
) -> None:  # json_logs: the logging is restored afterwards
    broken = tmp_path / "hubkeeper.toml"
    broken.write_text('[hub]\ntimeout = "ten"\n')
    assert main(["cull", "--config", str(broken)]) == 2
    out, err = capsys.readouterr()
    expected = 'hub.timeout: got "ten", expected a number of seconds > 0'
    assert err.splitlines() == [expected]
    [event] = _events(out)
    assert (event["event"], event["command"], event["error"], event["exit_code"]) == (
        "fatal", "hubkeeper cull", expected, 2,
    )  # fmt: skip


def test_a_lock_held_by_another_process_exits_75(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, json_logs
) -> None:
    monkeypatch.setenv("HUBKEEPER_SHIPPER_STATE_DIRR", "typo")
    state = tmp_path / "shipper-state"
    state.mkdir()
    config = tmp_path / "hubkeeper.toml"
    config.write_text(f'[shipper]\nstate_dir = "{state}"\n')
    holder = try_lock(state / "lock")
    try:
        assert main(["ship-logs", "--config", str(config)]) == 75
    finally:
        holder.close()
    out, err = capsys.readouterr()
    assert err == f"hubkeeper ship-logs: another shipper uses {state}\n"
    events = {e["event"]: e for e in _events(out)}
    assert events["fatal"]["exit_code"] == 75 and "exception" not in events["fatal"]
    warning = events["unknown_environment_variable"]
    assert (warning["level"], warning["variable"], warning["closest"]) == (
        "warning", "HUBKEEPER_SHIPPER_STATE_DIRR", "HUBKEEPER_SHIPPER_STATE_DIR",
    )  # fmt: skip


def test_check_config_warns_about_an_unknown_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBKEEPER_HUB_TIMOUT", "3")
    assert main(["check-config", str(EXAMPLE)]) == 0
    assert capsys.readouterr().err == (
        "warning: HUBKEEPER_HUB_TIMOUT is not a hubkeeper variable "
        "(did you mean HUBKEEPER_HUB_TIMEOUT?)\n"
    )


def test_a_taken_port_is_a_runtime_failure_with_one_line_and_exit_1(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    json_logs,
) -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]

    def serve(_config, _args) -> int:
        health = lambda: (True, "ok")  # noqa: E731
        endpoint = EndpointConfig(port=port)
        return Daemon("culler", endpoint, CollectorRegistry(), health).run()

    monkeypatch.setattr(culler_daemon, "cull", serve)
    config = tmp_path / "hubkeeper.toml"
    config.write_text("")
    with taken:
        assert main(["cull", "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert err == f"hubkeeper cull: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    [event] = [e for e in _events(out) if e["event"] == "fatal"]
    assert event["exit_code"] == 1 and "Traceback" in event["exception"]


def test_exit_codes_are_distinct_per_kind_of_failure() -> None:
    codes = [exit_code(e) for e in (ConfigError(["x"]), LockHeld("x"), OSError("x"))]
    assert codes == [2, 75, 1]
