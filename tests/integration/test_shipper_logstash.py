"""The Logstash output against Elastic's own Lumberjack v2 server (go-lumber), built here."""

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubkeeper.deploy.elasticsearch import cache_dir
from hubkeeper.deploy.stack import free_ports, wait_for
from tests.integration.shipping import (
    ShipperRun,
    Writer,
    stop_shippers,  # noqa: F401  (autouse)
)

pytestmark = pytest.mark.beside  # runs beside the main lane (tests/run)

SOURCE = Path(__file__).resolve().parent / "lumberjack"


@pytest.fixture(scope="session")
def lumberjack() -> Path:
    """The receiver binary, built with the machine's Go toolchain (cached by source hash)."""
    digest = hashlib.sha256()
    for name in ("main.go", "go.mod", "go.sum"):
        digest.update((SOURCE / name).read_bytes())
    binary = cache_dir() / f"lumberjack-{digest.hexdigest()[:16]}"
    if not binary.exists():
        go = shutil.which("go") or "/usr/local/go/bin/go"
        binary.parent.mkdir(parents=True, exist_ok=True)
        partial = binary.with_suffix(".partial")
        subprocess.run([go, "build", "-o", str(partial), "."], cwd=SOURCE, check=True)
        partial.rename(binary)
    return binary


class Receiver:
    """One go-lumber receiver process, writing what it receives to ``out``."""

    def __init__(self, binary: Path, workdir: Path, tls: tuple[Path, Path] | None = None) -> None:
        self.binary, self.out, self.tls = binary, workdir / "received.jsonl", tls
        self.port = free_ports(1)[0]
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "receiver.log"

    def start(self) -> None:
        command = [str(self.binary), "-bind", f"127.0.0.1:{self.port}", "-out", str(self.out)]
        if self.tls:
            command += ["-cert", str(self.tls[0]), "-key", str(self.tls[1])]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.listening, 10, "the Lumberjack receiver")

    def listening(self) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def events(self) -> list[dict]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines()]


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    started: list[Receiver] = []
    yield started
    for receiver in started:
        receiver.kill()


def logstash_run(workdir: Path, name: str, log: Path, port: int, **logstash: object) -> ShipperRun:
    return ShipperRun(
        workdir,
        None,
        name,
        [{"name": "app", "paths": [str(log)], "parser": "raw"}],
        shipper={
            "output": "logstash",
            "batch_max_events": 500,
            "logstash": {
                "hosts": [f"127.0.0.1:{port}"],
                "window_size": 200,
                "timeout": 5.0,
                **logstash,
            },
        },
    )


def test_logstash_output_delivers_everything_and_resumes_after_the_receiver_restarts(
    tmp_path: Path, lumberjack: Path, receivers: list[Receiver]
) -> None:
    receiver = Receiver(lumberjack, tmp_path)
    receivers.append(receiver)
    receiver.start()
    log = tmp_path / "app.log"
    run = logstash_run(tmp_path / "shipper", "lj", log, receiver.port).start()
    writer = Writer(log, count=5000, rate=1000)
    writer.start()
    wait_for(lambda: len(receiver.events()) > 500, 30, "the first events at the receiver")
    receiver.kill()
    time.sleep(3)  # lines keep coming; the shipper retries
    received_before = len(receiver.events())
    receiver.start()
    writer.join()
    run.wait_shipped(log)
    run.stop()
    events = receiver.events()
    assert len(events) > received_before  # delivery went on after the restart
    messages = [event["message"] for event in events]
    assert set(messages) == set(writer.expected())  # everything, at least once
    first = events[0]
    assert first["@metadata"]["_index"].startswith("lj-logs-raw-")
    assert len(first["@metadata"]["_id"]) == 28 and first["service.name"] == "app"
    ids = {}
    for event in events:  # a re-sent event carries the same id, so it is indexed once
        assert ids.setdefault(event["@metadata"]["_id"], event["message"]) == event["message"]
    assert len(ids) == 5000


def test_logstash_output_over_tls(
    tmp_path: Path, lumberjack: Path, receivers: list[Receiver]
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    receiver = Receiver(lumberjack, tmp_path, tls=(cert, key))
    receivers.append(receiver)
    receiver.start()
    log = tmp_path / "app.log"
    log.write_text("".join(f"secure {n}\n" for n in range(300)))
    run = logstash_run(
        tmp_path / "shipper", "ljtls", log, receiver.port, tls=True, ca_file=str(cert)
    ).start()
    run.wait_shipped(log)
    run.stop()
    assert sorted(e["message"] for e in receiver.events()) == sorted(
        f"secure {n}" for n in range(300)
    )


def test_logstash_output_refuses_an_unknown_certificate(
    tmp_path: Path, lumberjack: Path, receivers: list[Receiver]
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    receiver = Receiver(lumberjack, tmp_path, tls=(cert, key))
    receivers.append(receiver)
    receiver.start()
    log = tmp_path / "app.log"
    log.write_text("not for strangers\n")
    run = logstash_run(tmp_path / "shipper", "ljbad", log, receiver.port, tls=True).start()
    wait_for(lambda: run.metric("hubkeeper_shipper_request_failures_total") >= 2, 30, "failures")
    run.stop()
    assert receiver.events() == []
    assert any(e["event"] == "output_unavailable" for e in run.log())
