"""A user server that prints hostile lines between ordinary ones, while NGINX and the hub
keep logging, shipped into the real Elasticsearch: every ordinary line of every source
arrives once, each hostile line arrives once (tagged where it could not be parsed), no
secret reaches any field, and the shipper's lag stays within seconds."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import requests

from hubkeeper.deploy.elasticsearch import Elasticsearch
from hubkeeper.deploy.stack import Stack, wait_for
from hubkeeper.shippers.framing import FAILURE, PARSE_FAILURE
from hubkeeper.shippers.sources import TIMESTAMP_INVALID
from tests.hostile import HOSTILE, SECRETS
from tests.integration.shipping import (
    stack_shipper,
    stop_shippers,  # noqa: F401  (autouse)
    user_process,
)
from tests.integration.test_shipper_stack import check_every_line_once

USER = "mallory"
ROUNDS = 3  # the hostile lines, each between two ordinary lines, this many times
# Prints each hostile line between ordinary ones, on stdout and stderr in turn.
SCRIPT = """
import sys, time
lines = open("/hostile/lines.bin", "rb").read().split(b"\\n")[:-1]
n = 0
for turn in range(ROUNDS):
    for line in lines:
        out = (sys.stdout if n % 2 == 0 else sys.stderr).buffer
        out.write(b"ordinary %d\\n" % n + line + b"\\n")
        out.flush()
        n += 1
        time.sleep(0.02)
out.write(b"ordinary %d\\n" % n)
""".replace("ROUNDS", str(ROUNDS))


class Sampler(threading.Thread):
    """Keeps NGINX and the hub logging (a request every 50 ms) and samples the shipper's
    worst lag meanwhile."""

    def __init__(self, stack: Stack, metrics_url: str) -> None:
        super().__init__(daemon=True)
        self.stack, self.metrics_url = stack, metrics_url
        self.stop = threading.Event()
        self.worst_lag = 0.0
        self.requests = 0

    def run(self) -> None:
        deadline = time.monotonic() + 120  # bounded, whatever happens
        while not self.stop.is_set() and time.monotonic() < deadline:
            requests.get(f"{self.stack.public_url}/hub/api/", timeout=5)
            self.requests += 1
            text = requests.get(self.metrics_url, timeout=5).text
            for line in text.splitlines():
                if line.startswith("hubkeeper_shipper_lag_seconds{"):
                    self.worst_lag = max(self.worst_lag, float(line.split()[-1]))
            self.stop.wait(0.05)


def test_hostile_user_output_is_shipped_once_tagged_and_without_secrets(
    stack: Stack, elasticsearch: Elasticsearch, tmp_path: Path
) -> None:
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "lines.bin").write_bytes(b"".join(line + b"\n" for _, line in HOSTILE))
    run = stack_shipper(stack, tmp_path / "shipper", elasticsearch, "hostile").start()
    sampler = Sampler(stack, f"http://127.0.0.1:{run.port}/metrics")
    sampler.start()
    container = user_process(
        stack,
        USER,
        ["python3", "-c", SCRIPT],
        volumes={str(folder): {"bind": "/hostile", "mode": "ro"}},
    )
    total = ROUNDS * len(HOSTILE)
    mine = {"term": {"labels.jupyterhub_user": USER}}
    try:
        assert container.wait(timeout=120)["StatusCode"] == 0, container.logs()[-2000:]
        wait_for(lambda: len(run.docs(query=mine)) >= 2 * total + 1, 60, "the container's lines")
    finally:
        sampler.stop.set()
        sampler.join(10)
        container.remove(force=True)
    nginx_access = Path(stack.config.nginx.prefix) / "logs" / "access.log"
    hub_log = stack.logs / "hub-a.log"
    sizes = {path: path.stat().st_size for path in (nginx_access, hub_log)}
    run.wait_shipped(*sizes)
    assert run.healthy() and run.running()

    # Every line of the other sources, once, while the user server misbehaved.
    docs = run.docs()
    for path, size in sizes.items():
        assert check_every_line_once(docs, path, size) > 0
    assert sampler.requests > 20

    # The user server's lines: ordinary ones once each and untagged, hostile ones once each.
    served = sorted(run.docs(query=mine), key=lambda d: (d["hubkeeper.stream"], d["log.offset"]))
    ordinary = [d for d in served if d["message"].startswith("ordinary ")]
    assert sorted(d["message"] for d in ordinary) == sorted(
        f"ordinary {n}" for n in range(total + 1)
    )
    assert not [d for d in ordinary if "tags" in d]
    assert {(d["user.name"], d["container.name"]) for d in served} == {(USER, container.name)}
    hostile = [d for d in served if d not in ordinary]
    assert len(hostile) == total, [d["message"][:60] for d in hostile]
    reasons = [d.get(FAILURE) for d in hostile if PARSE_FAILURE in d.get("tags", [])]
    assert reasons.count("json_too_deep") == ROUNDS
    assert reasons.count("encode_error") == ROUNDS  # a lone surrogate: shipped as Docker wrote it
    invalid_dates = [d for d in hostile if TIMESTAMP_INVALID in d.get("tags", [])]
    assert len(invalid_dates) >= 10 * ROUNDS  # every impossible date of tests/hostile.py
    assert (
        run.metric(
            "hubkeeper_shipper_parse_failures_total", 'reason="json_too_deep",source="containers"'
        )
        == ROUNDS
    )

    # No secret in any field of any document (the dead letters included), nor in the logs.
    everything = json.dumps(run.docs("hostile-*"))
    assert not [s for s in SECRETS if s in everything]
    assert SECRETS[0] in (folder / "lines.bin").read_text(errors="replace")  # they were sent
    assert not run.dead_letters()
    assert sampler.worst_lag < 5.0, f"the shipper fell {sampler.worst_lag:.1f} s behind"
    assert not [e for e in run.log() if e.get("event") in ("reader_failed", "file_read_failed")]
    run.stop()
