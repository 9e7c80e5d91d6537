"""A JupyterHub REST API client: paging, retries with backoff, and no token leaks.

The token is added only to the ``Authorization`` header. requests' exceptions carry the
request (and with it the headers), so they are never chained, logged or re-raised: a
failure becomes :class:`HubUnavailable` naming only the method, the redacted path and
the error's class.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import requests

from hubkeeper.backoff import full_jitter
from hubkeeper.config import HubClientConfig, Secret
from hubkeeper.log import get_logger
from hubkeeper.redact import redact

PAGINATION_MEDIA_TYPE = "application/jupyterhub-pagination+json"

log = get_logger(__name__)


class HubAPIError(Exception):
    """The hub answered with an error (``status`` is None when it did not answer at all)."""

    def __init__(self, status: int | None, method: str, path: str, message: str) -> None:
        super().__init__(f"{method} {path}: {status or 'no response'}: {message}")
        self.status = status
        self.method = method
        self.path = path
        self.message = message


class HubUnavailable(HubAPIError):
    """The hub could not be reached, or kept failing (429/5xx) through every retry."""


class HubNoAnswer(HubUnavailable):
    """A request was sent but no answer came in time, and it was not to be retried."""


class _TokenAuth(requests.auth.AuthBase):
    """Adds ``Authorization: token ...`` as the request is sent.

    The revealed token thus never sits in a local variable of this module's frames, and a
    ``.netrc`` entry cannot replace it.
    """

    def __init__(self, token: Secret) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"token {self._token.reveal()}"
        return request


class HubClient:
    """Talks to ``<config.url>/hub/api`` with ``config.token``."""

    def __init__(self, config: HubClientConfig, session: requests.Session | None = None) -> None:
        self.config = config
        self._api = config.url.rstrip("/") + "/hub/api"
        self._session = session or requests.Session()
        self._auth = _TokenAuth(config.token) if config.token is not None else None

    # --- core ----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        """Call ``path`` (e.g. ``/users``); return the parsed JSON, or None for no content."""
        return self._json(self._send(method, path, params, json, {}), method, path)

    def paginate(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[Any]:
        """Yield every item of a paginated list, one page of ``config.page_size`` at a time.

        The next offset is computed here, never taken from ``next.url`` (behind NGINX that
        URL carries the proxy's host). A hub that answers with a plain list (before
        JupyterHub 2) returns everything at once.
        """
        offset = 0
        while True:
            page_params = {**(params or {}), "offset": offset, "limit": self.config.page_size}
            accept = {"Accept": PAGINATION_MEDIA_TYPE}
            response = self._send("GET", path, page_params, None, accept)
            page = self._json(response, "GET", path)
            if isinstance(page, list):
                yield from page
                return
            items = page["items"]
            yield from items
            if not items or (page.get("_pagination") or {}).get("next") is None:
                return
            offset += len(items)  # the hub may cap the limit below our page size

    # --- convenience ---------------------------------------------------------------------

    def users(self) -> Iterator[dict[str, Any]]:
        """Every user model, paged."""
        return self.paginate("/users")

    def user(self, name: str) -> dict[str, Any]:
        return self.request("GET", _user_path(name))

    def version(self) -> str:
        return self.request("GET", "/")["version"]

    def whoami(self) -> dict[str, Any]:
        """The user or service that owns the token."""
        return self.request("GET", "/user")

    def start_server(
        self, user: str, server_name: str = "", options: dict[str, Any] | None = None
    ) -> None:
        """Ask for a (named) server; the hub may still be spawning when this returns."""
        self.request("POST", _server_path(user, server_name), json=options)

    def stop_server(
        self, user: str, server_name: str = "", remove: bool = False, resend: bool = True
    ) -> bool:
        """Ask for a (named) server to stop, and with ``remove`` to delete a named one.

        True when the hub reports it stopped (204), False while it is still stopping (202).
        With ``resend`` False, a request that got no answer in time is not sent again
        (:class:`HubNoAnswer`): the hub has it, and a busy spawner would queue the copy too.
        """
        path = _server_path(user, server_name)
        body = {"remove": True} if remove else None
        response = self._send("DELETE", path, None, body, {}, resend_unanswered=resend)
        return response.status_code != 202

    def report_activity(self, user: str, when: str, servers: list[str]) -> None:
        """Tell the hub that ``user`` and their ``servers`` were active at ``when`` (ISO 8601)."""
        body = {"last_activity": when, "servers": {s: {"last_activity": when} for s in servers}}
        self.request("POST", f"{_user_path(user)}/activity", json=body)

    def create_users(self, names: list[str]) -> list[dict[str, Any]]:
        """Create users (409 from the hub if they all exist already); return their models."""
        return self.request("POST", "/users", json={"usernames": names})

    def delete_user(self, name: str) -> None:
        self.request("DELETE", _user_path(name))

    # --- internals -----------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        json: Any,
        headers: dict[str, str],
        resend_unanswered: bool = True,
    ) -> requests.Response:
        shown = redact(path + (f"?{urlencode(params, doseq=True)}" if params else ""))
        attempts = self.config.retries + 1
        for attempt in range(1, attempts + 1):
            retry_after = None  # seconds the hub asked us to wait (429, 503)
            try:
                response = self._session.request(
                    method,
                    self._api + path,
                    params=params,
                    json=json,
                    headers=headers,
                    auth=self._auth,
                    timeout=self.config.timeout,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                status, reason = None, type(exc).__name__
                if isinstance(exc, requests.ReadTimeout) and not resend_unanswered:
                    raise HubNoAnswer(None, method, shown, reason) from None
            else:
                status, reason = response.status_code, f"HTTP {response.status_code}"
                if status < 300:
                    return response
                if status != 429 and status < 500:
                    raise HubAPIError(status, method, shown, _message(response))
                retry_after = _seconds(response.headers.get("Retry-After"))
            if attempt == attempts:
                break
            delay = self._delay(attempt, retry_after)
            log.warning(
                "hub api retry",
                method=method,
                path=shown,
                attempt=attempt,
                reason=reason,
                delay=round(delay, 3),
            )
            time.sleep(delay)
        raise HubUnavailable(
            status, method, shown, f"{reason} after {attempts} attempt(s)"
        ) from None

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff, or the hub's Retry-After; capped at backoff_max."""
        if retry_after is not None:
            return min(retry_after, self.config.backoff_max)
        return full_jitter(attempt, self.config.backoff, self.config.backoff_max)

    @staticmethod
    def _json(response: requests.Response, method: str, path: str) -> Any:
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            message = "response is not JSON"
        raise HubAPIError(response.status_code, method, redact(path), message) from None


def _user_path(name: str) -> str:
    return f"/users/{quote(name, safe='')}"


def _server_path(user: str, server_name: str) -> str:
    if server_name:
        return f"{_user_path(user)}/servers/{quote(server_name, safe='')}"
    return f"{_user_path(user)}/server"


def _message(response: requests.Response) -> str:
    """The hub's JSON ``message``, else the HTTP reason phrase."""
    try:
        body = response.json()
    except ValueError:
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    return redact(str(message or response.reason or "error"))


def _seconds(value: str | None) -> float | None:
    """A Retry-After given in seconds; HTTP dates and garbage are ignored."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
