"""The log shipper on the real stack's logs (hub with its proxy, NGINX, a user container)
into the real Elasticsearch."""

import json
from pathlib import Path

import pytest
import requests

from hubkeeper.deploy.elasticsearch import Elasticsearch
from hubkeeper.deploy.stack import Stack, wait_for
from hubkeeper.hub.images import SINGLEUSER_IMAGE
from hubkeeper.hubapi import HubAPIError
from hubkeeper.redact import redact
from tests.integration.helpers import start_and_wait, stop_and_wait, user_containers
from tests.integration.shipping import (
    stack_shipper,
    stop_shippers,  # noqa: F401  (autouse)
    user_process,
)

USER = "shipper-ann"


def check_every_line_once(docs: list[dict], path: Path, size: int) -> int:
    """Each line of the file's first ``size`` bytes starts exactly one event, or continues
    the event before it (a traceback line, a stack line); returns the number of events."""
    data = path.read_bytes()[:size]
    starts, position = {}, 0
    for line in data.split(b"\n")[:-1]:
        starts[position] = line.decode("utf-8", "replace")
        position += len(line) + 1
    mine = [d for d in docs if d["log.file.path"] == str(path) and d["log.offset"] < size]
    offsets = [d["log.offset"] for d in mine]
    assert len(offsets) == len(set(offsets)), "an event was indexed twice"
    assert set(offsets) <= set(starts), "an event starts where no line does"
    by_offset = {d["log.offset"]: d for d in mine}
    current = None
    for offset, text in starts.items():
        if offset in by_offset:
            current = by_offset[offset]
            continue
        assert current is not None, f"line at {offset} was not shipped: {text!r}"
        body = current["message"] + "\n" + current.get("error.stack_trace", "")
        assert redact(text).strip() in body, f"line at {offset} is in no event: {text!r}"
    return len(mine)


def test_stack_logs_arrive_once_parsed_and_without_secrets(
    stack: Stack, elasticsearch: Elasticsearch, tmp_path: Path
) -> None:
    run = stack_shipper(stack, tmp_path / "shipper", elasticsearch, "stack").start()
    client = stack.client()
    token = client.config.token.reveal()
    client.create_users([USER])
    start_and_wait(client, USER)
    (container,) = user_containers(stack, USER)
    # Tokens in URLs (refused nowadays, still logged): NGINX logs them as they came.
    requests.get(f"{stack.public_url}/user/{USER}/api/status?token={token}", timeout=10)
    requests.get(f"{stack.public_url}/hub/api/users/{USER}?token={token}", timeout=10)
    assert client.user(USER)["name"] == USER
    broken = requests.post(
        f"{stack.public_url}/hub/api/users",
        data="{not json",
        headers={"Authorization": f"token {token}"},
        timeout=10,
    )
    assert broken.status_code == 400  # the hub logs the parse error with its traceback
    container_output = container.logs(stdout=True, stderr=True).decode()
    stop_and_wait(client, USER)
    with pytest.raises(HubAPIError):
        client.start_server(USER, options={"image": "debian:bookworm"})  # a failed spawn

    hub_log, proxy_log = stack.logs / "hub-a.log", stack.logs / "hub-a-proxy.log"
    nginx_logs = Path(stack.config.nginx.prefix) / "logs"
    files = [hub_log, proxy_log, nginx_logs / "access.log", nginx_logs / "error.log"]
    sizes = {path: path.stat().st_size for path in files}
    run.wait_shipped(*files)
    # What each line says, without its "[I date logger]" prefix (parsed into fields).
    container_lines = [redact(line).split("] ", 1)[-1] for line in container_output.splitlines()]
    assert container_lines, "the user server wrote nothing"

    def container_text() -> str:
        served = run.docs(f"{run.name}-logs-container-*")
        return "\n".join(d["message"] + "\n" + d.get("error.stack_trace", "") for d in served)

    wait_for(
        lambda: all(line in container_text() for line in container_lines),
        30,
        "every line of the user container",
    )
    docs = run.docs()
    for path, size in sizes.items():
        assert check_every_line_once(docs, path, size) > 0

    def one(**fields: object) -> dict:
        found = [d for d in docs if all(d.get(k) == v for k, v in fields.items())]
        assert found, f"no document with {fields}"
        return found[0]

    request = one(**{"url.path": f"/hub/api/users/{USER}", "event.dataset": "jupyterhub"})
    assert request["http.request.method"] == "GET"
    assert request["http.response.status_code"] == 200
    assert request["client.ip"] == "127.0.0.1"
    assert request["event.duration"] > 0
    assert one(**{"event.action": "spawn", "user.name": USER})["event.duration"] > 0
    one(**{"event.action": "stop", "user.name": USER})
    one(**{"event.action": "spawn-failed", "user.name": USER})
    parse_error = one(message="Couldn't parse JSON")
    assert parse_error["log.level"] == "error"
    assert parse_error["error.type"].endswith("JSONDecodeError")
    assert "Traceback (most recent call last)" in parse_error["error.stack_trace"]
    route = one(message=f"Adding route /user/{USER} -> http://127.0.0.1:{_server_port(docs)}")
    assert route["event.dataset"] == "proxy" and route["log.level"] == "info"
    access = one(**{"url.path": f"/hub/api/users/{USER}", "event.dataset": "nginx.access"})
    assert access["http.response.status_code"] == 200
    for path in (f"/hub/api/users/{USER}", f"/user/{USER}/api/status"):
        one(**{"url.path": path, "url.query": "token=***", "event.dataset": "nginx.access"})
    assert any(d.get("log.level") == "notice" for d in docs if d["event.dataset"] == "nginx.error")
    assert not [d for d in docs if "\x1b" in d["message"]]

    served = [d for d in docs if d["event.dataset"] == "container"]
    assert {d["container.name"] for d in served} == {container.name}
    assert {d["labels.jupyterhub_user"] for d in served} == {USER}
    assert {d["labels.hub"] for d in served} == {stack.config.jupyterhub.name}
    assert {d["container.image.name"] for d in served} == {SINGLEUSER_IMAGE}
    assert {d["hubkeeper.stream"] for d in served} <= {"stdout", "stderr"}
    offsets = [d["log.offset"] for d in served]
    assert len(offsets) == len(set(offsets)), "a container line was indexed twice"

    secrets_dir = stack.workdir / "secrets"
    secrets = [p.read_text().strip() for p in secrets_dir.rglob("*") if p.is_file()]
    assert token in secrets and len(secrets) >= 3
    everything = json.dumps(docs + run.dead_letters())
    leaked = [s[:6] + "..." for s in secrets if s in everything]
    assert not leaked, f"secrets reached Elasticsearch: {leaked}"
    assert token in (nginx_logs / "access.log").read_text()  # it was there to be leaked
    run.stop()


def _server_port(docs: list[dict]) -> str:
    for doc in docs:
        if doc.get("message", "").startswith(f"Adding user {USER} to proxy"):
            return doc["message"].rsplit(":", 1)[1]
    raise AssertionError("the hub never added the server to its proxy")


def test_container_line_over_16_kib_arrives_whole(
    stack: Stack, elasticsearch: Elasticsearch, tmp_path: Path
) -> None:
    run = stack_shipper(stack, tmp_path / "shipper", elasticsearch, "longline").start()
    long_line = "".join(chr(ord("a") + i % 26) for i in range(40000))
    script = (
        f"import sys, time; time.sleep(1); print({long_line!r}); print('short', file=sys.stderr)"
    )
    container = user_process(stack, "longline", ["python3", "-c", script])
    try:
        container.wait(timeout=60)
        mine = {"term": {"labels.jupyterhub_user": "longline"}}
        wait_for(lambda: len(run.docs(query=mine)) >= 2, 30, "the container's two lines")
    finally:
        container.remove(force=True)
    run.stop()
    whole, short = sorted(run.docs(query=mine), key=lambda d: len(d["message"]), reverse=True)
    assert whole["message"] == long_line and "tags" not in whole  # plain output, not truncated
    assert (whole["hubkeeper.stream"], short["hubkeeper.stream"], short["message"]) == (
        "stdout", "stderr", "short",
    )  # fmt: skip
    assert whole["container.id"] == container.id
    assert whole["labels.jupyterhub_user"] == "longline"
