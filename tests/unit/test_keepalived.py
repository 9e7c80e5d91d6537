"""The keepalived config of an NGINX host, rendered from the [keepalived] section, and the
test network's address plan (the integration test runs both for real)."""

import pytest

from hubkeeper.config import ConfigError, KeepalivedConfig
from hubkeeper.deploy.keepalived import render
from hubkeeper.deploy.netns import (
    FLOATING_ADDRESS,
    ROOT_ADDRESS,
    NetworkError,
    control_address,
    node_address,
)
from hubkeeper.loader import from_dict

SECTION = KeepalivedConfig(
    address="192.0.2.100/24",
    interface="ens3",
    virtual_router_id=7,
    priority=120,
    source="192.0.2.11",
    peers=["192.0.2.12"],
    advert_interval=0.5,
    check_url="http://127.0.0.1:8000/",
)


def block(text: str, name: str) -> list[str]:
    """The lines of the block that opens with ``name {``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"{name} {{")
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    end = next(i for i in range(start, len(lines)) if lines[i] == f"{indent}}}")
    return [line.strip() for line in lines[start + 1 : end]]


def test_both_hosts_start_as_backup_and_a_recovered_host_does_not_take_the_address_back() -> None:
    instance = block(render(SECTION, curl="/usr/bin/curl"), "vrrp_instance hubkeeper")
    assert "state BACKUP" in instance
    assert "nopreempt" in instance
    assert "priority 120" in instance
    assert "virtual_router_id 7" in instance
    assert "advert_int 0.5" in instance


def test_vrrp_goes_by_unicast_to_the_peers_from_this_hosts_address() -> None:
    text = render(SECTION, curl="/usr/bin/curl")
    instance = block(text, "vrrp_instance hubkeeper")
    assert "unicast_src_ip 192.0.2.11" in instance
    assert block(text, "unicast_peer") == ["192.0.2.12"]
    assert block(text, "virtual_ipaddress") == ["192.0.2.100/24 dev ens3"]
    assert "interface ens3" in instance


def test_the_nginx_check_takes_any_http_answer_so_a_dead_hub_does_not_move_the_address() -> None:
    text = render(SECTION, curl="/usr/bin/curl")
    script = block(text, "vrrp_script nginx_answers")
    assert script[0] == (
        'script "/usr/bin/curl --silent --output /dev/null --max-time 1 http://127.0.0.1:8000/"'
    )
    assert "--fail" not in text
    assert script[-2:] == ["fall 2", "rise 2"]
    assert block(text, "track_script") == ["nginx_answers"]


@pytest.mark.parametrize(
    ("changes", "key"),
    [({"address": None}, "keepalived.address"), ({"peers": []}, "keepalived.peers")],
)
def test_rendering_without_the_address_or_the_peers_names_the_key(
    changes: dict[str, object], key: str
) -> None:
    section = KeepalivedConfig(**{**SECTION.__dict__, **changes})
    with pytest.raises(ConfigError, match=key):
        render(section, curl="/usr/bin/curl")


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"address": "192.0.2.100"}, "keepalived.address: got"),
        ({"virtual_router_id": 256}, "keepalived.virtual_router_id: got 256"),
        ({"priority": 255}, "keepalived.priority: got 255"),
        ({"peers": ["nginx-b"]}, "keepalived.peers: got"),
        ({"source": "192.0.2.11", "peers": ["192.0.2.11"]}, "keepalived.peers"),
    ],
)
def test_bad_keepalived_settings_are_refused_by_key(
    values: dict[str, object], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        from_dict({"keepalived": values})


def test_a_minimal_section_loads() -> None:
    section = from_dict({"keepalived": {"address": "192.0.2.100/24", "peers": ["192.0.2.41"]}})
    assert section.keepalived.advert_interval == 1.0
    assert section.keepalived.priority == 100


def test_the_address_plan_keeps_nodes_control_hosts_and_the_floating_address_apart() -> None:
    assert ROOT_ADDRESS == "10.213.0.1"
    assert [node_address(n) for n in (1, 2, 3)] == ["10.213.0.11", "10.213.0.12", "10.213.0.13"]
    assert (control_address(1), control_address(40)) == ("10.213.0.40", "10.213.0.79")
    assert FLOATING_ADDRESS == "10.213.0.100"
    with pytest.raises(NetworkError, match="control-plane host 41"):
        control_address(41)
    with pytest.raises(NetworkError, match="Swarm node 30"):
        node_address(30)
