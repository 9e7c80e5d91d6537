"""An NGINX host's agent (watchers/hubs/agent.py) as a real `hubkeeper agent` process with a
real NGINX on 127.0.0.1, no hubs behind it: with NGINX on several hosts, the leading
watcher checks each host's live config through its agent and has the agent replace one
that NGINX refuses (the one-machine case runs in test_failover.py)."""

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hubkeeper.deploy.stack import free_ports, http_ok, to_toml, wait_for
from hubkeeper.loader import load
from hubkeeper.nginx import Nginx
from hubkeeper.watchers.hubs.hands import Hands
from hubkeeper.watchers.hubs.logic import NginxConfigCheck
from tests.integration.helpers import break_nginx_config, nginx_config_healed

pytestmark = pytest.mark.beside  # runs beside the main lane (tests/run)


def test_the_leader_has_an_nginx_hosts_agent_replace_a_config_broken_by_hand(
    tmp_path: Path,
) -> None:
    public, internal, agent_port, *hub_ports = free_ports(9)
    instances = [
        {"name": name, "proxy_port": proxy, "proxy_api_port": api, "hub_port": hub}
        for name, (proxy, api, hub) in zip("ab", (hub_ports[:3], hub_ports[3:]), strict=True)
    ]
    config_path = tmp_path / "hubkeeper.toml"
    config_path.write_text(to_toml({
        "nginx": {"prefix": str(tmp_path / "nginx"), "public_port": public,
                  "internal_port": internal},
        "agent": {"nginx": True, "fencing_file": str(tmp_path / "fencing"),
                  "endpoint": {"port": agent_port}},
    }) + "".join(f"\n[[jupyterhub.instances]]\n{to_toml(hub)}" for hub in instances))  # fmt: skip
    config = load(config_path)
    nginx, hub_a = Nginx(config.nginx, Path(config.nginx.prefix)), config.jupyterhub.instance("a")
    nginx.install(nginx.render(hub_a, 4))
    nginx_pid = nginx.start()
    url = f"http://127.0.0.1:{agent_port}"
    with (tmp_path / "agent.log").open("w") as log:
        agent = subprocess.Popen(
            [sys.executable, "-m", "hubkeeper.cli", "agent", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: http_ok(f"{url}/healthz") or agent.poll() is not None, 30, "the agent")
        assert agent.poll() is None, (tmp_path / "agent.log").read_text()
        leader_config = dataclasses.replace(
            config, nginx=dataclasses.replace(config.nginx, agents=[url])
        )
        leader = Hands(leader_config, config_path, token=lambda: 7)
        assert leader.nginx_configs(hub_a, 4) == {url: NginxConfigCheck()}

        broken = break_nginx_config(nginx)
        wait_for(lambda: "[emerg]" in (nginx.prefix / "logs" / "error.log").read_text(), 10,
                 "NGINX to refuse the reload")  # fmt: skip
        assert nginx.served_generation() == 4  # the config it had loaded
        ((host, found),) = leader.nginx_configs(hub_a, 4).items()
        assert host == url and not found.generated
        assert found.error == '[emerg] unknown directive "hubkeeper_broken_by_hand" in ' + str(
            nginx.conf_path
        ) + ":7", found  # fmt: skip

        kept = leader.repair_nginx(url, hub_a, 4, confirm_timeout=5)
        assert kept == f"{url}: {nginx.rejected_path}"
        assert nginx.rejected_path.read_text() == broken
        assert nginx_config_healed(nginx) and nginx.conf_path.read_text() == nginx.render(hub_a, 4)
        assert leader.nginx_configs(hub_a, 4) == {url: NginxConfigCheck()}
    finally:
        agent.terminate()
        agent.wait(15)
        os.kill(nginx_pid, signal.SIGQUIT)
