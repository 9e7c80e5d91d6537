"""The hub database: SQLite on one machine, PostgreSQL (psycopg 3) for hubs on two hosts,
its password only from a file or the environment."""

from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from traitlets.config import Config as TraitletsConfig

from hubkeeper.config import ConfigError
from hubkeeper.files import write_atomically
from hubkeeper.hub.settings import apply
from hubkeeper.loader import from_dict, load

PASSWORD = "s3cr/t:@%pw"  # every character a URL would misread


def hub_settings(tmp_path: Path, instance: str = "b", **jupyterhub: object) -> TraitletsConfig:
    config = from_dict(
        {
            "jupyterhub": {
                "instances": [
                    {"name": "a", "proxy_port": 9001, "proxy_api_port": 9002, "hub_port": 9003},
                    {"name": "b", "proxy_port": 9011, "proxy_api_port": 9012, "hub_port": 9013},
                ],
                **jupyterhub,
            }
        },
        base=tmp_path,
    )
    c = TraitletsConfig()
    apply(c, config, instance)
    return c


def database_errors(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    path = tmp_path / "hubkeeper.toml"
    path.write_text(f"[jupyterhub]\n{text}\n")
    with pytest.raises(ConfigError) as error:
        load(path, environ=environ or {})
    return str(error.value)


@pytest.fixture
def password_file(tmp_path: Path) -> str:
    (tmp_path / "db-password").write_text(PASSWORD + "\n")
    return "db-password"


def test_a_plain_postgresql_url_runs_on_psycopg_with_the_password_from_its_file(
    tmp_path: Path, password_file: str
) -> None:
    c = hub_settings(
        tmp_path,
        database_url="postgresql://jupyterhub@db.example:5433/hub",
        database_password_file=password_file,
    )
    url = make_url(c.JupyterHub.db_url)
    assert url.drivername == "postgresql+psycopg"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "jupyterhub", PASSWORD, "db.example", 5433, "hub",
    )  # fmt: skip
    # SQLAlchemy loads psycopg 3 for it (no connection is made)
    assert create_engine(c.JupyterHub.db_url).dialect.driver == "psycopg"


def test_each_instance_names_itself_to_postgresql(tmp_path: Path) -> None:
    for name in ("a", "b"):
        c = hub_settings(tmp_path, name, database_url="postgresql+psycopg://hub@db/hub")
        assert c.JupyterHub.db_kwargs == {
            "connect_args": {"application_name": f"jupyterhub-{name}"}
        }
        assert c.JupyterHub.db_url == "postgresql+psycopg://hub@db/hub"


def test_sqlite_stays_the_default_and_is_passed_unchanged(tmp_path: Path) -> None:
    c = hub_settings(tmp_path)
    assert c.JupyterHub.db_url == "sqlite:///jupyterhub.sqlite"
    assert "db_kwargs" not in c.JupyterHub


def test_the_password_may_come_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "hubkeeper.toml"
    path.write_text('[jupyterhub]\ndatabase_url = "postgresql://hub@db/hub"\n')
    config = load(path, environ={"HUBKEEPER_JUPYTERHUB_DATABASE_PASSWORD": PASSWORD})
    assert config.jupyterhub.database_password is not None
    assert config.jupyterhub.database_password.reveal() == PASSWORD
    assert PASSWORD not in repr(config)


def test_a_password_in_the_url_is_refused_naming_the_key_without_showing_it(
    tmp_path: Path,
) -> None:
    message = database_errors(tmp_path, f'database_url = "postgresql://hub:{PASSWORD}@db/hub"')
    assert message.startswith("jupyterhub.database_url: has a password in it")
    assert "jupyterhub.database_password_file" in message
    assert PASSWORD not in message and "s3cr" not in message


def test_a_password_in_a_url_from_the_environment_is_refused_too(tmp_path: Path) -> None:
    url = "postgresql+psycopg://hub:hunter2@db/hub"
    message = database_errors(tmp_path, "", {"HUBKEEPER_JUPYTERHUB_DATABASE_URL": url})
    assert message.startswith("jupyterhub.database_url: has a password in it")
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "url", ["mysql://hub:pw@db/hub", "postgres://hub@db/hub", "jupyterhub.sqlite"]
)
def test_a_database_other_than_sqlite_or_postgresql_is_refused(tmp_path: Path, url: str) -> None:
    message = database_errors(tmp_path, f'database_url = "{url}"')
    assert message.startswith("jupyterhub.database_url: got a ")
    assert "expected sqlite:///FILE or postgresql://USER@HOST:PORT/DATABASE" in message
    assert "pw" not in message


def test_a_password_file_for_sqlite_is_refused(tmp_path: Path, password_file: str) -> None:
    message = database_errors(tmp_path, f'database_password_file = "{password_file}"')
    assert message == (
        "jupyterhub.database_password_file: set, but SQLite (database_url) takes no password"
    )


def test_a_password_needs_a_user_in_the_url(tmp_path: Path, password_file: str) -> None:
    message = database_errors(
        tmp_path,
        f'database_url = "postgresql://db/hub"\ndatabase_password_file = "{password_file}"',
    )
    assert message.startswith("jupyterhub.database_url: names no user for the password")


def test_a_secret_file_is_written_with_its_mode_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "password"
    write_atomically(path, b"one\n", mode=0o600)
    path.chmod(0o644)  # replaced by a file that was 0600 from its creation on
    write_atomically(path, b"two\n", mode=0o600)
    assert path.read_bytes() == b"two\n"
    assert path.stat().st_mode & 0o777 == 0o600
