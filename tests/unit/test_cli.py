from pathlib import Path

import pytest

from hubkeeper import __version__
from hubkeeper.cli import main

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
