"""The standard hub, its spawner and NGINX, exercised through the REST API."""

import dataclasses
import time

import pytest

from hubkeeper.deploy.stack import Stack
from hubkeeper.hub.images import ALT_IMAGE, SINGLEUSER_IMAGE
from hubkeeper.hubapi import HubAPIError, HubClient
from tests.integration.helpers import (
    server_status,
    start_and_wait,
    stop_and_wait,
    user_containers,
)


def test_spawn_through_nginx_labels_and_stop(stack: Stack) -> None:
    client = stack.client()
    client.create_users(["alice"])
    server = start_and_wait(client, "alice")
    assert server["url"] == "/user/alice/"

    (container,) = user_containers(stack, "alice")
    labels = stack.config.labels
    assert container.labels[labels.user] == "alice"
    assert container.labels[labels.server] == ""
    assert container.labels[labels.hub] == stack.config.jupyterhub.name
    assert container.labels[labels.image] == SINGLEUSER_IMAGE
    host_config = container.attrs["HostConfig"]
    assert host_config["NetworkMode"] == "host"
    assert host_config["Memory"] == 512 * 1024**2
    assert host_config["CpuQuota"] == host_config["CpuPeriod"]  # cpu_limit = 1.0

    response = server_status(stack, "alice")
    assert response.status_code == 200, response.text
    assert "started" in response.json()
    assert response.headers["X-Hubkeeper-Generation"] == "1"  # answered through NGINX

    stop_and_wait(client, "alice")
    assert user_containers(stack, "alice") == []


def test_paging_returns_every_user_once(stack: Stack) -> None:
    names = [f"page-{i:03d}" for i in range(250)]
    client = stack.client()
    client.create_users(names)
    paging = HubClient(dataclasses.replace(client.config, page_size=50))
    seen = [user["name"] for user in paging.users() if user["name"].startswith("page-")]
    assert sorted(seen) == names
    assert len(seen) == len(set(seen)) == 250


def test_user_picks_allowed_image_and_is_refused_others(stack: Stack) -> None:
    client = stack.client()
    client.create_users(["bob"])
    start_and_wait(client, "bob", options={"image": ALT_IMAGE})
    (container,) = user_containers(stack, "bob")
    assert container.image.tags == [ALT_IMAGE]
    assert container.labels[stack.config.labels.image] == ALT_IMAGE
    stop_and_wait(client, "bob")

    with pytest.raises(HubAPIError) as refused:
        client.start_server("bob", options={"image": "debian:bookworm"})
    assert refused.value.status == 400
    assert "not in allowed list" in str(refused.value)
    time.sleep(0.5)
    assert user_containers(stack, "bob") == []


def test_docker_engine_has_no_bridge(stack: Stack) -> None:
    networks = {network.name for network in stack.docker.networks.list()}
    assert "bridge" not in networks
