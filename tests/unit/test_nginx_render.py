from pathlib import Path

import pytest

from hubkeeper.config import HubInstance, NginxConfig
from hubkeeper.nginx import Nginx, NginxError, render


def test_render_fills_placeholders() -> None:
    assert render("listen {{port}}; # {{port}}", {"port": 80}) == "listen 80; # 80"


def test_render_refuses_missing_values() -> None:
    with pytest.raises(NginxError, match="generation"):
        render("add_header X {{generation}};", {})


def test_template_points_both_listeners_at_the_active_hub(tmp_path: Path) -> None:
    nginx = Nginx(NginxConfig(public_port=9000, internal_port=9081), tmp_path)
    text = nginx.render(HubInstance(name="b", proxy_port=9011, hub_port=9013), generation=7)
    assert "upstream hub_public   { server 127.0.0.1:9011; }" in text
    assert "upstream hub_internal { server 127.0.0.1:9013; }" in text
    assert text.count("add_header X-Hubkeeper-Generation 7 always;") == 2
    assert "listen 127.0.0.1:9000;" in text and "listen 127.0.0.1:9081;" in text
    assert "{{" not in text


def test_the_upstreams_are_the_active_hub_at_its_own_host(tmp_path: Path) -> None:
    nginx = Nginx(NginxConfig(), tmp_path)
    text = nginx.render(HubInstance(name="b", host="192.0.2.12"), generation=2)
    assert "upstream hub_public   { server 192.0.2.12:8001; }" in text
    assert "upstream hub_internal { server 192.0.2.12:8003; }" in text
