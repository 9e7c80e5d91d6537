from pathlib import Path

import pytest

from hubkeeper.config import Config, ConfigError, Secret
from hubkeeper.loader import load, unknown_variables

FULL = """
[hub]
url = "http://127.0.0.1:8000"
token_file = "secrets/hub.token"
timeout = 5
retries = 2
backoff = 0.25
backoff_max = 4.0
page_size = 100

[logging]
level = "debug"

[docker]
url = "unix:///run/docker.sock"

[labels]
user = "example.user"

[jupyterhub]
name = "lab-1"
database_url = "sqlite:///state/jupyterhub.sqlite"
cookie_secret_file = "secrets/cookie"
hub_connect_url = "http://127.0.0.1:8081"
allowed_images = ["hubkeeper/singleuser:latest", "hubkeeper/alt:latest"]
mem_limit = "512M"
cpu_limit = 0.5
admin_users = ["admin"]
spawn_timeout = 90

[[jupyterhub.instances]]
name = "a"
proxy_port = 8001
proxy_api_port = 8002
hub_port = 8003

[[jupyterhub.instances]]
name = "b"
proxy_port = 8011
proxy_api_port = 8012
hub_port = 8013

[nginx]
public_port = 8000
internal_port = 8081
"""

HUB_TOKEN = "hub-token-1b7c9e"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hubkeeper.toml"
    path.write_text(text)
    return path


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as error:
        load(path, environ=environ or {})
    return error.value.problems


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "hub.token").write_text(HUB_TOKEN + "\n")
    (folder / "cookie").write_text("ab" * 32)
    return folder


def test_full_example_parses(tmp_path: Path, secrets_dir: Path) -> None:
    config = load(write(tmp_path, FULL), environ={})
    assert config.hub.timeout == 5.0 and isinstance(config.hub.timeout, float)
    assert (config.hub.retries, config.hub.page_size, config.hub.backoff_max) == (2, 100, 4.0)
    assert config.hub.token == Secret(HUB_TOKEN)  # relative to the file, stripped
    assert config.logging.level == "debug"
    assert config.docker.url == "unix:///run/docker.sock"
    assert config.labels.user == "example.user"
    assert [i.name for i in config.jupyterhub.instances] == ["a", "b"]
    assert config.jupyterhub.instance("b").hub_port == 8013
    assert config.jupyterhub.cookie_secret.reveal() == "ab" * 32
    assert config.jupyterhub.allowed_images[1] == "hubkeeper/alt:latest"
    assert config.nginx.internal_port == 8081


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    config = load(write(tmp_path, ""), environ={})
    assert config == Config()
    assert config.hub.url == "http://127.0.0.1:8000"
    assert config.hub.token is None
    assert config.logging.level == "info"


def test_wrong_type_names_key_value_and_expectation(tmp_path: Path) -> None:
    path = write(tmp_path, '[hub]\ntimeout = "ten"\n')
    assert problems(path) == ['hub.timeout: got "ten", expected a number of seconds > 0']


def test_unknown_key_is_reported_with_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, '[hub]\ntimout = 3\n[[jupyterhub.instances]]\nnmae = "a"\n')
    found = problems(path)
    assert any(p.startswith("hub.timout: unknown key, expected one of: ") for p in found)
    assert any(p.startswith("jupyterhub.instances[0].nmae: unknown key") for p in found)


def test_secret_value_cannot_be_written_inline(tmp_path: Path) -> None:
    (problem,) = problems(write(tmp_path, '[hub]\ntoken = "inline"\n'))
    assert problem.startswith("hub.token: unknown key") and "token_file" in problem
    assert "inline" not in problem


def test_invalid_toml_reports_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '[hub]\nurl = "http://x"\ntimeout = \n')
    assert problems(path) == [f"{path}: invalid TOML: Invalid value (at line 3, column 11)"]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path / "absent.toml")
    assert problem.endswith("absent.toml: cannot read: No such file or directory")


def test_environment_overrides_a_key(tmp_path: Path) -> None:
    config = load(write(tmp_path, "[hub]\ntimeout = 5\n"), environ={"HUBKEEPER_HUB_TIMEOUT": "3"})
    assert config.hub.timeout == 3.0


def test_bad_environment_override_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    assert problems(path, {"HUBKEEPER_HUB_TIMEOUT": "ten"}) == [
        'HUBKEEPER_HUB_TIMEOUT: got "ten", expected a TOML value for a number'
    ]
    assert problems(path, {"HUBKEEPER_HUB_TIMEOUT": "-1"}) == [
        "hub.timeout: got -1, expected a number of seconds > 0"
    ]


def test_secret_from_token_file(tmp_path: Path, secrets_dir: Path) -> None:
    config = load(write(tmp_path, f'[hub]\ntoken_file = "{secrets_dir}/hub.token"\n'), environ={})
    assert config.hub.token.reveal() == HUB_TOKEN


def test_secret_from_environment_wins_over_the_file(tmp_path: Path, secrets_dir: Path) -> None:
    path = write(tmp_path, '[hub]\ntoken_file = "secrets/hub.token"\n')
    config = load(path, environ={"HUBKEEPER_HUB_TOKEN": "from-env"})
    assert config.hub.token.reveal() == "from-env"


def test_unreadable_or_empty_secret_file_is_reported(tmp_path: Path, secrets_dir: Path) -> None:
    (secrets_dir / "empty").write_text("\n")
    text = """
[hub]
token_file = "secrets/nope"
[jupyterhub]
cookie_secret_file = "secrets/empty"
"""
    assert problems(write(tmp_path, text)) == [
        'hub.token_file: got "secrets/nope", expected a readable file (No such file or directory)',
        'jupyterhub.cookie_secret_file: got "secrets/empty", expected a file that is not empty',
    ]


def test_repr_never_shows_a_secret(tmp_path: Path, secrets_dir: Path) -> None:
    config = load(write(tmp_path, FULL), environ={"HUBKEEPER_JUPYTERHUB_PROXY_TOKEN": "proxy-tok"})
    assert config.jupyterhub.proxy_token.reveal() == "proxy-tok"
    for text in (repr(config), str(config), repr(config.hub), f"{config.hub.token}"):
        assert HUB_TOKEN not in text and "proxy-tok" not in text and "ab" * 32 not in text
    assert "Secret('***')" in repr(config.hub)


def test_bad_port_in_a_list_of_instances(tmp_path: Path) -> None:
    text = """
[[jupyterhub.instances]]
name = "a"
[[jupyterhub.instances]]
name = "b"
host = "127.0.0.2"
hub_port = 0
"""
    assert problems(write(tmp_path, text)) == [
        "jupyterhub.instances[1].hub_port: got 0, expected a TCP port (1-65535)"
    ]


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    text = """
[hub]
url = "ftp://hub"
retries = -1
[logging]
level = "loud"
[jupyterhub]
mem_limit = "lots"
[nginx]
public_port = 70000
"""
    found = problems(write(tmp_path, text))
    for expected in [
        'hub.url: got "ftp://hub", expected an http(s) URL',
        "hub.retries: got -1, expected a number of retries >= 0",
        'logging.level: got "loud", expected "debug" or "info" or "warning" or "error"',
        'jupyterhub.mem_limit: got "lots", expected a size such as "512M" or "2G"',
        "nginx.public_port: got 70000, expected a TCP port (1-65535)",
    ]:
        assert expected in found
    assert len(found) == 5


# --- known bugs in hubkeeper/config.py (strict: these start failing once fixed) -----------


def test_secret_from_environment_without_a_section(tmp_path: Path) -> None:
    config = load(write(tmp_path, ""), environ={"HUBKEEPER_HUB_TOKEN": "from-env"})
    assert config.hub.token is not None


def test_environment_override_of_a_choice(tmp_path: Path) -> None:
    config = load(write(tmp_path, ""), environ={"HUBKEEPER_LOGGING_LEVEL": "debug"})
    assert config.logging.level == "debug"


def test_section_that_is_not_a_table_is_reported(tmp_path: Path) -> None:
    assert problems(write(tmp_path, "hub = 5\n")) == ["hub: got 5, expected a table"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[jupyterhub.instances]]\nname = "a"\n'
            '[[jupyterhub.instances]]\nname = "a"\nproxy_port = 8011\n'
            "proxy_api_port = 8012\nhub_port = 8013\n",
            "jupyterhub.instances: expected unique instance names, got ['a', 'a']",
        ),
        (
            '[[jupyterhub.instances]]\nname = "a"\n[[jupyterhub.instances]]\nname = "b"\n',
            "jupyterhub.instances[1].proxy_port: got 8001, "
            "expected a port not used by instances[0].proxy_port",
        ),
        (
            "[nginx]\npublic_port = 8081\n",
            "nginx.internal_port: expected a port other than public_port",
        ),
        ("[hub]\nbackoff = 20\n", "hub.backoff: expected at most backoff_max"),
        (
            "[shipper]\nretry_backoff = 60\n",
            "shipper.retry_backoff: expected at most retry_backoff_max",
        ),
        ("[culler]\nbusy_min_span = 700\n", "culler.busy_min_span: expected at most busy_window"),
    ],
)
def test_contradicting_keys_are_rejected_with_the_key_path(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert problems(write(tmp_path, text)) == [expected]


def test_an_endpoint_port_0_is_rejected_since_scrapers_find_daemons_by_port(
    tmp_path: Path,
) -> None:
    assert problems(write(tmp_path, "[watcher.endpoint]\nport = 0\n")) == [
        "watcher.endpoint.port: got 0, expected a TCP port (1-65535)"
    ]


def test_unknown_hubkeeper_variables_are_named_with_the_closest_known_one() -> None:
    environ = {
        "HUBKEEPER_HUB_TIMOUT": "3",  # a typo
        "HUBKEEPER_SHIPPER_ELASTICSEARCH_APIKEY": "x",  # a secret's name mistyped
        "HUBKEEPER_NOTHING_LIKE_IT_AT_ALL": "1",
        "HUBKEEPER_HUB_TIMEOUT": "3",  # known: an override
        "HUBKEEPER_ALERTS_SMTP_PASSWORD": "x",  # known: a nested table's secret
        "HUBKEEPER_CONFIG": "hubkeeper.toml",  # known: read by the CLI
        "PATH": "/usr/bin",
    }
    assert unknown_variables(environ) == [
        ("HUBKEEPER_HUB_TIMOUT", "HUBKEEPER_HUB_TIMEOUT"),
        ("HUBKEEPER_NOTHING_LIKE_IT_AT_ALL", None),
        ("HUBKEEPER_SHIPPER_ELASTICSEARCH_APIKEY", "HUBKEEPER_SHIPPER_ELASTICSEARCH_API_KEY"),
    ]


def test_agents_without_a_lease_and_unknown_agent_hubs_are_refused(tmp_path: Path) -> None:
    found = problems(write(tmp_path, """
[nginx]
agents = ["http://192.0.2.45:9109"]
[agent]
hubs = ["a", "z"]
"""))  # fmt: skip
    assert any(p.startswith("watcher.lease_database_url: expected with agents") for p in found)
    assert any(p.startswith("watcher.agent_token_file: expected with agents") for p in found)
    assert "agent.hubs: no instances named ['z'] in [[jupyterhub.instances]]" in found


def test_an_agent_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    found = problems(
        write(tmp_path, '[agent]\nnginx = true\n[agent.endpoint]\nlisten = "192.0.2.45"\n')
    )
    assert [p.split(":")[0] for p in found] == ["agent.endpoint.token_file"]


def test_a_lease_database_url_with_a_password_in_it_is_refused(tmp_path: Path) -> None:
    url = "postgresql://hub:s3cret@192.0.2.40/jupyterhub"
    found = problems(write(tmp_path, f'[watcher]\nlease_database_url = "{url}"\n'))
    assert [p.split(":")[0] for p in found] == ["watcher.lease_database_url"]
    assert "s3cret" not in found[0] and "watcher.lease_password_file" in found[0]
