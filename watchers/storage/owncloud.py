"""Owncloud as its users reach it: ``status.php`` and a WebDAV PROPFIND of a canary path.

``status.php`` is Owncloud's documented status document, a JSON object with ``installed``,
``maintenance``, ``needsDbUpgrade``, ``version``, ``versionstring``, ``edition`` and
``productname``; it needs no login. The PROPFIND (``Depth: 0``) reads the canary path with
an app password, as a sync client would, and must answer ``207 Multi-Status``.
"""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import requests

from hubkeeper.config import StorageOwncloudConfig
from hubkeeper.watchers.storage.logic import Check, OwncloudState, owncloud_state

PROPFIND = (
    b'<?xml version="1.0" encoding="utf-8"?>\n'
    b'<d:propfind xmlns:d="DAV:"><d:prop><d:getlastmodified/><d:resourcetype/></d:prop>'
    b"</d:propfind>"
)
INFO_KEYS = ("version", "versionstring", "edition", "productname")


@dataclass(frozen=True)
class OwncloudResult:
    state: OwncloudState
    checks: dict[str, Check] = field(default_factory=dict)  # "status", "webdav"
    info: dict[str, str] = field(default_factory=dict)

    @property
    def up(self) -> bool:
        return self.state == "up" and all(check.ok for check in self.checks.values())


def webdav_url(config: StorageOwncloudConfig) -> str:
    base = config.webdav_url
    if base is None:
        assert config.url is not None and config.user is not None
        user = urllib.parse.quote(config.user, safe="")
        base = f"{config.url.rstrip('/')}/remote.php/dav/files/{user}"
    return f"{base.rstrip('/')}/{urllib.parse.quote(config.canary_path.lstrip('/'))}"


class Owncloud:
    def __init__(self, config: StorageOwncloudConfig) -> None:
        assert config.url is not None
        self.config = config
        self.session = requests.Session()
        self.session.verify = config.ca_file or True

    def check(self) -> OwncloudResult:
        checks: dict[str, Check] = {}
        status = self._status(checks)
        state = owncloud_state(status)
        info = {key: str(status[key]) for key in INFO_KEYS if status and key in status}
        if self.config.user is not None and self.config.app_password is not None:
            checks["webdav"] = self._propfind()
        return OwncloudResult(state, checks, info)

    def _status(self, checks: dict[str, Check]) -> dict[str, Any] | None:
        started = time.monotonic()
        url = f"{self.config.url.rstrip('/')}/status.php"  # type: ignore[union-attr]
        try:
            response = self.session.get(url, timeout=self.config.timeout)
            response.raise_for_status()
            status = response.json()
            if not isinstance(status, dict) or "installed" not in status:
                raise ValueError("not Owncloud's status document (no `installed`)")
        except (requests.RequestException, ValueError) as exc:
            checks["status"] = Check(False, time.monotonic() - started, _describe(exc))
            return None
        checks["status"] = Check(True, time.monotonic() - started)
        return status

    def _propfind(self) -> Check:
        assert self.config.user is not None and self.config.app_password is not None
        started = time.monotonic()
        try:
            response = self.session.request(
                "PROPFIND",
                webdav_url(self.config),
                data=PROPFIND,
                headers={"Depth": "0", "Content-Type": "application/xml; charset=utf-8"},
                auth=(self.config.user, self.config.app_password.reveal()),
                timeout=self.config.timeout,
            )
        except requests.RequestException as exc:
            return Check(False, time.monotonic() - started, _describe(exc))
        seconds = time.monotonic() - started
        if response.status_code != 207:
            return Check(False, seconds, f"PROPFIND answered HTTP {response.status_code}")
        return Check(True, seconds)

    def close(self) -> None:
        self.session.close()


def _describe(exc: Exception) -> str:
    """The kind of failure, without the URL's credentials (there are none in it) or body."""
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"
