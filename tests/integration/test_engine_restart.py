"""The Docker engine restarted under a running service (issue 19's fault), with live-restore.

The stack runs on a Docker engine of the test's own (:mod:`hubkeeper.deploy.engine`): the
machine's shared engine is never stopped. While that engine is down, the hub is restarted
too (a failover at that moment starts a hub just the same): a hub whose spawner took "no
answer from the engine" for a stopped server forgot it and left its container an orphan.
So is the log shipper (a crash restarted by systemd): one that could not ask the engine
for its data root looked for container logs under /var/lib/docker for good.
"""

import json
import re
import secrets
import time
from pathlib import Path

import docker

from hubkeeper.config import DockerConfig
from hubkeeper.deploy import hubctl
from hubkeeper.deploy.elasticsearch import Elasticsearch
from hubkeeper.deploy.engine import OwnEngine
from hubkeeper.deploy.stack import running_stack, wait_for
from hubkeeper.hub.images import BASE_IMAGE, ensure_images
from tests.integration.alerting import alertmanager_alerts, prometheus_alerts
from tests.integration.helpers import server_status, start_and_wait
from tests.integration.shipping import search

ALERT = "HubkeeperDockerEngineDown"
SCALE = 1 / 60  # its 2 minutes are 2 s: the engine's 8 s down raise it here
TICKS = 100  # one line every 0.2 s: before, during and after the engine is down
FLOOD = 300  # 1 KB lines at once while it is down: past the 64 KiB pipe buffer


def printer(tag: str) -> str:
    """A process of the server printing numbered lines onto the server's own output."""
    return (
        "import time\n"
        "out = open('/proc/1/fd/1', 'w')\n"
        f"for i in range({TICKS}):\n"
        f"    out.write(f'{tag} tick {{i}}\\n'); out.flush(); time.sleep(0.2)\n"
        "    if i == 25:\n"
        f"        out.write(''.join(f'{tag} flood {{j}} ' + 'y' * 1000 + '\\n'"
        f" for j in range({FLOOD}))); out.flush()\n"
    )


def numbers(messages: list[str], tag: str, kind: str) -> list[int]:
    pattern = re.compile(rf"{tag} {kind} (\d+)\b")
    return [int(m.group(1)) for text in messages if (m := pattern.search(text))]


def events(log: Path, name: str) -> list[dict]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and (event := json.loads(line)).get("event") == name:
            found.append(event)
    return found


def test_an_engine_restart_leaves_servers_running_reachable_listed_and_their_lines_shipped_once(
    tmp_path: Path, elasticsearch: Elasticsearch
) -> None:
    machine = docker.DockerClient(base_url=DockerConfig().url, timeout=300)
    images = (BASE_IMAGE, *ensure_images(machine, print))
    tag = f"restart{secrets.token_hex(3)}"
    with OwnEngine(tmp_path / "engine", images) as engine:
        overrides: dict[str, dict[str, object]] = {
            "docker": {"url": engine.url},
            "jupyterhub": {"poll_interval": 1},  # the hub polls while the engine is down
            "alerts": {"rule_time_scale": SCALE},
            "culler": {"timeout": 3600.0, "cull_every": 2.0, "orphans": "remove",
                       "orphan_grace": 5.0},
            "shipper": {
                "state_dir": str(tmp_path / "shipper-state"),
                "elasticsearch": {"hosts": [elasticsearch.url], "replicas": 0},
                "sources": [{"name": "containers", "type": "docker"}],
            },
        }  # fmt: skip
        with running_stack(
            tmp_path / "stack",
            hub_name=f"engine-{secrets.token_hex(3)}",
            daemons=("export-containers", "cull", "ship-logs"),
            overrides=overrides,
            prometheus=True,
        ) as stack:
            client = stack.client()
            client.create_users(["alice"])
            start_and_wait(client, "alice")
            (container,) = engine.client().containers.list(
                filters={"label": f"{stack.config.labels.user}=alice"}
            )
            container.reload()
            pid = container.attrs["State"]["Pid"]
            container.exec_run(["python3", "-c", printer(tag)], detach=True)
            time.sleep(3)

            def meanwhile() -> None:
                assert server_status(stack, "alice").status_code == 200  # engine down
                hubctl.stop(stack.config, "a", timeout=10)
                stack.start_hub("a")  # it checks alice's server while the engine is down
                next(p for p in stack.processes if p.name == "ship-logs" and p.running()).stop()
                stack.start_daemon("ship-logs")  # it cannot ask the engine for its data root
                assert client.user("alice")["servers"][""]["ready"]
                assert server_status(stack, "alice").status_code == 200
                wait_for(
                    lambda: alertmanager_alerts(stack.alertmanager_url, ALERT), 30, "the alert"
                )

            engine.restart(down_for=8.0, while_down=meanwhile)

            after = engine.client().containers.get(container.id)
            wait_for(lambda: not prometheus_alerts(stack.prometheus_url, ALERT), 30, "resolved")
            assert after.status == "running" and after.attrs["State"]["Pid"] == pid
            wait_for(lambda: f"{tag} tick {TICKS - 1}\n" in after.logs().decode(), 60, "ticks")
            assert server_status(stack, "alice").status_code == 200
            server = client.user("alice")["servers"][""]
            assert server["ready"] and server["state"]["object_id"] == container.id

            logged = after.logs().decode(errors="replace").splitlines()  # json-file: all once
            assert numbers(logged, tag, "tick") == list(range(TICKS))
            assert numbers(logged, tag, "flood") == list(range(FLOOD))

            def shipped() -> list[str]:
                docs = search(elasticsearch, "hubkeeper-logs-*", {"match": {"message": tag}})
                return [str(doc.get("message", "")) for doc in docs]

            wait_for(lambda: len(shipped()) >= TICKS + FLOOD, 60, "the lines in Elasticsearch")
            messages = shipped()
            assert sorted(numbers(messages, tag, "tick")) == list(range(TICKS))
            assert sorted(numbers(messages, tag, "flood")) == list(range(FLOOD))

            assert events(stack.logs / "ship-logs.log", "docker_root_found")
            hub_log = (stack.logs / "hub-a.log").read_text(errors="replace")
            assert "Docker engine did not answer a poll" in hub_log
            assert "alice still running" in hub_log
            assert "appears to have stopped" not in hub_log
            decisions = events(stack.logs / "cull.log", "cull_decision")
            assert decisions and all(d["action"] == "keep" for d in decisions), decisions
            reconciled = events(stack.logs / "export-containers.log", "reconciliation")
            assert all(not r["missing"] and not r["orphans"] for r in reconciled), reconciled
            print(f"engine: {engine.timings} (s; the restart with the hub and shipper restarted)")
