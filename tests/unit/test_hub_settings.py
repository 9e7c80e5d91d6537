from pathlib import Path

import pytest
from traitlets.config import Config as TraitletsConfig

from hubkeeper.config import ConfigError
from hubkeeper.hub.settings import SERVICE_SCOPES, apply, proxy_command
from hubkeeper.hub.spawner import placement
from hubkeeper.loader import from_dict


def configure(tmp_path: Path, **jupyterhub: object) -> TraitletsConfig:
    tokens = tmp_path / "services"
    tokens.mkdir()
    (tokens / "hubkeeper-culler.token").write_text("culler-token\n")
    (tmp_path / "cookie").write_text("ab" * 32)
    config = from_dict(
        {
            "jupyterhub": {
                "name": "lab",
                "cookie_secret_file": "cookie",
                "services_token_dir": str(tokens),
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
    apply(c, config, "b")
    return c


def test_instance_ports_and_shared_state(tmp_path: Path) -> None:
    c = configure(tmp_path)
    assert c.JupyterHub.bind_url == "http://127.0.0.1:9011"
    assert c.JupyterHub.hub_bind_url == "http://127.0.0.1:9013"
    assert c.ConfigurableHTTPProxy.api_url == "http://127.0.0.1:9012"
    assert c.JupyterHub.cookie_secret == bytes.fromhex("ab" * 32)
    assert c.JupyterHub.cleanup_servers is False
    # user servers reach the hub through NGINX; the hub's own proxy route does not
    assert c.Spawner.hub_connect_url == "http://127.0.0.1:8081"
    assert "hub_connect_url" not in c.JupyterHub


def test_labels_templates_and_limits(tmp_path: Path) -> None:
    c = configure(tmp_path, mem_limit="2G", cpu_limit=0.5)
    assert c.DockerSpawner.extra_create_kwargs == {
        "labels": {
            "org.hubkeeper.user": "{raw_username}",
            "org.hubkeeper.server": "{raw_servername}",
            "org.hubkeeper.hub": "lab",
            "org.hubkeeper.image": "{raw_image}",
        }
    }
    assert c.DockerSpawner.mem_limit == "2G"
    assert c.DockerSpawner.cpu_limit == 0.5
    assert c.DockerSpawner.remove is True
    assert c.DockerSpawner.extra_host_config == {"auto_remove": False}  # keeps exit codes


def test_only_services_with_a_token_file_are_registered(tmp_path: Path) -> None:
    c = configure(tmp_path)
    assert c.JupyterHub.services == [{"name": "hubkeeper-culler", "api_token": "culler-token"}]
    assert c.JupyterHub.load_roles == [
        {
            "name": "hubkeeper-culler-role",
            "scopes": SERVICE_SCOPES["hubkeeper-culler"],
            "services": ["hubkeeper-culler"],
        }
    ]
    assert "delete:users" not in SERVICE_SCOPES["hubkeeper-culler"]


def test_swarm_placement_for_every_server_and_per_image_or_group(tmp_path: Path) -> None:
    rules = [
        {"image": "hubkeeper/singleuser-alt:latest", "constraints": ["node.labels.alt==true"]},
        {"group": "gpu", "constraints": ["node.labels.gpu==true", "node.role==worker"]},
    ]
    c = configure(tmp_path, spawner="swarm", placement_constraints=["node.role==worker"],
                  placement=rules)  # fmt: skip
    assert c.JupyterHub.spawner_class == "hubkeeper.hub.spawner.HostNetworkSwarmSpawner"
    spawner = c.HostNetworkSwarmSpawner
    assert spawner.placement_constraints == ["node.role==worker"]
    assert spawner.placement_rules == [{"group": None, **rules[0]}, {"image": None, **rules[1]}]
    alt, gpu = spawner.placement_rules
    base = spawner.placement_constraints
    assert placement(base, [alt, gpu], "hubkeeper/singleuser:latest", ["staff"]) == base
    assert placement(base, [alt, gpu], "hubkeeper/singleuser-alt:latest", ["gpu"]) == [
        "node.role==worker", "node.labels.alt==true", "node.labels.gpu==true",
    ]  # fmt: skip


def test_a_placement_rule_names_one_of_group_and_image(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"jupyterhub\.placement\[0\]\.group: expected exactly"):
        configure(tmp_path, placement=[{"constraints": ["node.role==worker"]}])


def test_an_instance_binds_its_hub_and_proxy_on_its_own_host(tmp_path: Path) -> None:
    instances = [
        {"name": "a", "host": "192.0.2.11", "proxy_port": 9001, "proxy_api_port": 9002,
         "hub_port": 9003},
        {"name": "b", "host": "192.0.2.12", "proxy_port": 9001, "proxy_api_port": 9002,
         "hub_port": 9003},
    ]  # fmt: skip
    c = configure(tmp_path, instances=instances)  # instance b
    assert c.JupyterHub.bind_url == "http://192.0.2.12:9001"
    assert c.JupyterHub.hub_bind_url == "http://192.0.2.12:9003"
    assert c.ConfigurableHTTPProxy.api_url == "http://192.0.2.12:9002"
    config = from_dict({"jupyterhub": {"instances": instances}})
    argv, _ = proxy_command(config, "b")
    assert argv[1:6] == [
        "--ip=192.0.2.12", "--port=9001", "--api-ip=192.0.2.12", "--api-port=9002",
        "--error-target=http://192.0.2.12:9003/hub/error",
    ]  # fmt: skip


@pytest.mark.parametrize(("given", "timeout"), [({}, 1), ({"init_spawners_timeout": -1}, -1)])
def test_how_long_a_starting_hub_waits_for_its_checks_of_the_servers(
    tmp_path: Path, given: dict[str, int], timeout: int
) -> None:
    assert configure(tmp_path, **given).JupyterHub.init_spawners_timeout == timeout


def test_a_hub_that_would_never_wait_for_its_checks_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"init_spawners_timeout: got 0, expected .*-1"):
        configure(tmp_path, init_spawners_timeout=0)
