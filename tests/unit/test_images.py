from pathlib import Path

import pytest

from hubkeeper.hub.images import debian_mirror, recipe_hash


def test_mirror_from_deb822_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n"
    )
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64] http://mirror.example/debian bookworm main\n"
    )
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_no_mirror_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no Debian mirror"):
        debian_mirror(tmp_path)


def test_recipe_hash_changes_with_any_part() -> None:
    assert recipe_hash("a", "b") == recipe_hash("a", "b")
    assert recipe_hash("a", "b") != recipe_hash("a", "c")
    assert recipe_hash("ab", "c") != recipe_hash("a", "bc")
