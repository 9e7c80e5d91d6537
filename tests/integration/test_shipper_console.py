"""``hubkeeper ship-logs --once --output ndjson[=FILE]`` as an operator runs it: the real
CLI on real files, every line in exactly one printed document, secrets redacted, nothing
written to the shipper's state folder, no Elasticsearch needed."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hubkeeper.deploy.stack import to_toml
from tests.integration.test_shipper_stack import check_every_line_once

pytestmark = pytest.mark.beside  # runs beside the main lane (tests/run)

HUBKEEPER = Path(sys.executable).with_name("hubkeeper")
SECRETS = ("hub", "nginx", "json", "header", "key")  # each as hk-secret-<name>
HUB_LOG = """\
[I 2026-11-25 10:00:00.123 JupyterHub app:3297] JupyterHub is now running at http://:8000
[I 2026-11-25 10:00:05.456 JupyterHub log:192] 200 GET /hub/api/users?token=hk-secret-hub (admin@127.0.0.1) 12.34ms
[E 2026-11-25 10:00:06.789 JupyterHub web:1875] Uncaught exception GET /hub/spawn/ann (127.0.0.1)
    HTTPServerRequest(protocol='http', host='127.0.0.1:8000', method='GET', uri='/hub/spawn/ann')
    Traceback (most recent call last):
      File "/usr/lib/python3/dist-packages/tornado/web.py", line 1790, in _execute
        result = await result
    RuntimeError: the spawner failed
[W 2026-11-25 10:00:07.000 JupyterHub base:1444] Failing suspected API request to not-running server: /hub/user/bob/api/status
"""  # noqa: E501
ACCESS_LOG = """\
127.0.0.1 - - [25/Nov/2026:10:00:00 +0000] "GET /hub/login HTTP/1.1" 200 1234 "-" "Mozilla/5.0"
127.0.0.1 - - [25/Nov/2026:10:00:01 +0000] "GET /user/ann/api/kernels?token=hk-secret-nginx HTTP/1.1" 200 56 "-" "python-requests/2.31"
127.0.0.7 - - [25/Nov/2026:10:00:02 +0000] "POST /hub/api/users/ann/server HTTP/1.1" 201 0 "-" "curl/8.0"
"""  # noqa: E501
JSON_LOG = "".join(
    json.dumps(line) + "\n"
    for line in [
        {"time": "2026-11-25T10:00:00Z", "level": "info", "msg": "started", "port": 8888,
         "api_token": "hk-secret-key"},
        {"time": "2026-11-25T10:00:01Z", "level": "info", "msg": "GET /api?token=hk-secret-json"},
        {"time": "2026-11-25T10:00:02Z", "level": "warning",
         "msg": "Authorization: token hk-secret-header refused"},
    ]
)  # fmt: skip
APP_LOG = "plain output\nmore plain output\nthe last line, still without its newline"


def run(config: Path, output: str) -> subprocess.CompletedProcess[str]:
    command = [str(HUBKEEPER), "ship-logs", "--config", str(config), "--once", "--output", output]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_every_line_printed_once_redacted_and_nothing_committed(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    files = {
        "hub": (logs / "hub.log", HUB_LOG, "jupyterhub"),
        "nginx-access": (logs / "access.log", ACCESS_LOG, "nginx_access"),
        "app-json": (logs / "app.json.log", JSON_LOG, "json"),
        "app": (logs / "app.log", APP_LOG, "auto"),
    }
    for path, text, _parser in files.values():
        path.write_text(text)
    state = tmp_path / "state"
    config = tmp_path / "hubkeeper.toml"
    sources = [
        {"name": name, "paths": [str(path)], "parser": parser, "timezone": "UTC"}
        for name, (path, _text, parser) in files.items()
    ]
    nowhere = {"hosts": ["http://127.0.0.1:9"]}  # no Elasticsearch answers there
    shipper = {"state_dir": str(state), "elasticsearch": nowhere, "sources": sources}
    config.write_text(to_toml({"shipper": shipper}))

    printed = run(config, "ndjson")
    assert printed.returncode == 0, printed.stderr
    docs = [json.loads(line) for line in printed.stdout.splitlines()]
    log_events = [json.loads(line)["event"] for line in printed.stderr.splitlines()]
    assert log_events.count("file_opened") == 4 and log_events[-1] == "documents_printed"
    assert not state.exists()

    for path, text, _parser in files.values():  # the lines with their newline
        check_every_line_once(docs, path, text.rindex("\n") + 1)
    last = [d for d in docs if d["log.file.path"] == str(logs / "app.log")][-1]
    assert (last["log.offset"], last["message"]) == (
        APP_LOG.rindex("\n") + 1, "the last line, still without its newline",
    )  # fmt: skip
    assert len(docs) == 4 + 3 + 3 + 3  # the uncaught exception's six lines are one event
    crash = next(d for d in docs if d.get("error.type"))
    assert crash["error.type"] == "RuntimeError" and crash["log.level"] == "error"
    assert {d["event.dataset"] for d in docs} >= {"jupyterhub", "nginx.access"}
    for secret in SECRETS:
        assert f"hk-secret-{secret}" not in printed.stdout

    target = tmp_path / "out" / "docs.ndjson"
    target.parent.mkdir()
    written = run(config, f"ndjson={target}")
    assert written.returncode == 0, written.stderr
    assert written.stdout == ""
    again = [json.loads(line) for line in target.read_text().splitlines()]
    where = [(d["log.file.path"], d["log.offset"], d["message"]) for d in docs]
    assert [(d["log.file.path"], d["log.offset"], d["message"]) for d in again] == where
    assert [p.name for p in target.parent.iterdir()] == ["docs.ndjson"]
    assert not state.exists()
