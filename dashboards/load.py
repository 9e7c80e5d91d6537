"""``hubkeeper dashboards load``: the saved objects into a real Kibana through its saved
objects import API (``overwrite=true``), into a space, with an API key or basic auth."""

from __future__ import annotations

from typing import Any

import requests

from hubkeeper.dashboards.auth import Credentials


class LoadError(Exception):
    """Kibana was not reached, refused the credentials, or refused some objects."""


def import_url(kibana: str, space: str | None) -> str:
    base = kibana.rstrip("/")
    if space and space != "default":
        base = f"{base}/s/{space}"
    return f"{base}/api/saved_objects/_import"


def load(
    ndjson: str,
    kibana: str,
    credentials: Credentials | None = None,
    space: str | None = None,
    timeout: float = 60.0,
) -> int:
    """Import with overwrite; the number of objects imported. Raises :class:`LoadError`."""
    session = (credentials or Credentials()).session()
    session.headers["kbn-xsrf"] = "true"
    url = import_url(kibana, space)
    files = {"file": ("hubkeeper-dashboards.ndjson", ndjson.encode(), "application/ndjson")}
    try:
        response = session.post(url, params={"overwrite": "true"}, files=files, timeout=timeout)
    except requests.RequestException as error:
        raise LoadError(f"Kibana unreachable at {kibana}: {type(error).__name__}") from None
    if response.status_code in (401, 403):
        raise LoadError(f"Kibana refused the credentials (HTTP {response.status_code})")
    if response.status_code == 404 and space:
        raise LoadError(f"no Kibana space {space!r} at {kibana} (HTTP 404)")
    if response.status_code != 200:
        raise LoadError(f"Kibana answered HTTP {response.status_code}: {response.text[:300]}")
    return _imported(response.json())


def _imported(answer: dict[str, Any]) -> int:
    errors = answer.get("errors") or []
    if not answer.get("success", False) or errors:
        lines = [
            f"{e.get('type')}/{e.get('id')}: {(e.get('error') or {}).get('type', 'error')}"
            f" {(e.get('error') or {}).get('message', '')}".rstrip()
            for e in errors
        ]
        raise LoadError("Kibana refused objects:\n  " + "\n  ".join(lines or ["(no details)"]))
    return int(answer.get("successCount", 0))
