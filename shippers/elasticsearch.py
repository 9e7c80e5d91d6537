"""The Elasticsearch adapter of the delivery contract (``shippers/delivery.py``): index
templates, bulk ``create`` with a result per item, retention of daily indices.

Each event is created with a deterministic ``_id`` in a daily index chosen from its own
timestamp, so a re-sent event is answered 409 and never indexed twice.

The requests go over urllib3 (:class:`Nodes`), not the official client: the shipper makes
six kinds of request, and the client's import alone (elastic_transport pulled in aiohttp)
cost 0.26 CPU s, a bulk request a fifth more CPU (tests/bench/es_output.py). Requests
speak the REST compatibility mode of the cluster's major version (``compatible-with=8`` on
an 8.x, whose server refuses 9's with HTTP 400). The cluster's versions are asked once,
before the first request (``GET /_nodes``, which needs the ``monitor`` cluster privilege,
as for Beats; ``GET /`` is not in every distribution).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any

import orjson
import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError

from hubkeeper.config import ShipperElasticsearchConfig
from hubkeeper.log import get_logger
from hubkeeper.shippers.delivery import CREATED, DAILY_INDEX, ItemResult, Unavailable, error_reason
from hubkeeper.shippers.mapping import PROBE_PATTERN, supported_types, templates
from hubkeeper.shippers.store import Record, bulk_body

log = get_logger(__name__)

# --- retention -------------------------------------------------------------------------


def expired(indices: Sequence[str], today: date, days: int) -> list[str]:
    """Daily indices (``...-YYYY.MM.DD``) older than ``days`` days; none when days is 0."""
    if days <= 0:
        return []
    cutoff = today - timedelta(days=days)
    old = []
    for name in indices:
        match = DAILY_INDEX.match(name)
        if match:
            try:
                day = date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
            except ValueError:
                continue
            if day < cutoff:
                old.append(name)
    return sorted(old)


# --- the server's major version ----------------------------------------------------------


def media_type(subtype: str, major: int | None) -> str:
    """The ``Accept`` or ``Content-Type`` of ``subtype`` (``json``, ``x-ndjson``) in the
    compatibility mode of ``major``; the plain type, which every major takes, when None."""
    if major is None:
        return f"application/{subtype}"
    return f"application/vnd.elasticsearch+{subtype}; compatible-with={major}"


def lowest_major(nodes: Mapping[str, Any]) -> int:
    """The lowest major version among the nodes (``GET /_nodes`` filtered to
    ``nodes.*.version``): during a rolling upgrade an old node refuses the new major's
    compatibility mode, while a new one still takes the previous major's."""
    return min(int(node["version"].split(".")[0]) for node in nodes["nodes"].values())


def refusal(status: int, answer: Any) -> str:
    """What an error answer says, as ``HTTP <status>: <type>: <reason>`` (the server's own
    words; never the request, which would carry credentials)."""
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        return f"HTTP {status}: {error_reason(error)}"
    return f"HTTP {status}: {str(error)[:300]}" if error else f"HTTP {status}"


# --- the nodes ---------------------------------------------------------------------------


class Nodes:
    """JSON requests to the configured nodes, one kept-alive connection each (two: the
    retention thread may ask while the sender waits). A node that cannot be reached passes
    the request to the next, which then takes the following ones; nothing else is tried
    again here (the pipeline decides). Every failure raises :class:`Unavailable`."""

    def __init__(self, config: ShipperElasticsearchConfig) -> None:
        manager = urllib3.PoolManager(
            num_pools=len(config.hosts), maxsize=2, retries=False,
            timeout=urllib3.Timeout(total=config.timeout), ca_certs=config.ca_file,
        )  # fmt: skip
        self.pools: list[tuple[urllib3.HTTPConnectionPool, str]] = []
        for host in config.hosts:  # a node's URL may have a path (behind a proxy)
            prefix = (urllib3.util.parse_url(host).path or "").rstrip("/")
            self.pools.append((manager.connection_from_url(host), prefix))
        self.current = 0
        self.major: int | None = None  # the compatibility mode, once the versions are known
        self.auth: dict[str, str] = {}
        if config.api_key is not None:
            self.auth["authorization"] = f"ApiKey {config.api_key.reveal()}"
        elif config.username is not None and config.password is not None:
            pair = f"{config.username}:{config.password.reveal()}".encode()
            self.auth["authorization"] = f"Basic {base64.b64encode(pair).decode()}"

    def request(
        self, method: str, path: str, body: Any = None, *, ndjson: bytes | None = None,
        accept: Sequence[int] = (),
    ) -> Any:  # fmt: skip
        """The decoded answer to a request with a JSON ``body`` or an ``ndjson`` one; an
        error status in ``accept`` is answered like a success."""
        headers = {**self.auth, "accept": media_type("json", self.major)}
        data = ndjson
        if ndjson is not None:
            headers["content-type"] = media_type("x-ndjson", self.major)
        elif body is not None:
            data = orjson.dumps(body)
            headers["content-type"] = media_type("json", self.major)
        response = self._send(method, path, data, headers)
        try:
            answer = orjson.loads(response.data)
        except orjson.JSONDecodeError:
            answer = None
        if response.status >= 300 and response.status not in accept:
            raise Unavailable(refusal(response.status, answer))
        if answer is None:
            raise Unavailable(f"HTTP {response.status} without a JSON answer")
        return answer

    def _send(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> urllib3.BaseHTTPResponse:
        failure = ""
        for _node in self.pools:
            pool, prefix = self.pools[self.current]
            try:
                return pool.urlopen(method, prefix + path, body=body, headers=headers,
                                    retries=False, redirect=False)  # fmt: skip
            except ConnectTimeoutError as error:  # and NewConnectionError: never reached
                failure = type(error).__name__
                self.current = (self.current + 1) % len(self.pools)
            except HTTPError as error:
                raise Unavailable(type(error).__name__) from None
        raise Unavailable(failure)


# --- the output --------------------------------------------------------------------------


class ElasticsearchOutput:
    """Bulk ``create`` requests to the configured nodes (no client-side retries: the
    pipeline decides per item)."""

    def __init__(self, config: ShipperElasticsearchConfig) -> None:
        self.config = config
        self.nodes = Nodes(config)

    def install_templates(self) -> None:
        """The index templates, with the ECS types this cluster's mappers support."""
        supported = supported_types(self._accepts)
        for name, body in templates(self.config, supported).items():
            self._call("PUT", f"/_index_template/{name}", body)

    def _accepts(self, template: dict[str, Any]) -> bool:
        """Whether the cluster takes ``template`` (simulated: nothing is stored); a 400
        names a mapper type it lacks."""
        probe = {"index_patterns": [PROBE_PATTERN], "template": template}
        answer = self._call("POST", "/_index_template/_simulate", probe, accept=(400,))
        return "error" not in answer

    def bulk(self, records: Sequence[Record]) -> list[ItemResult]:
        """One bulk request; a result per record, in order. Raises :class:`Unavailable`."""
        response = self._call(
            "POST", "/_bulk?filter_path=errors,items.*.status,items.*.error",
            ndjson=bulk_body(records),
        )  # fmt: skip
        items = response.get("items", ())
        if len(items) != len(records):
            raise Unavailable(f"bulk answered {len(items)} items for {len(records)}")
        if response.get("errors") is False:  # every item created: no need to look at each
            return [CREATED] * len(items)
        results = []
        for item in items:
            (body,) = item.values()
            results.append(ItemResult(int(body["status"]), body.get("error")))
        return results

    def delete_expired(self, today: date) -> list[str]:
        """Delete daily log and dead-letter indices older than ``retention_days``."""
        patterns = f"{self.config.index_prefix}-*,{self.config.dead_letter_index}-*"
        found = self._call("GET", f"/{patterns}?expand_wildcards=open,closed")
        old = expired(list(found), today, self.config.retention_days)
        for name in old:
            self._call("DELETE", f"/{name}")
        return old

    def _call(
        self, method: str, path: str, body: Any = None, *, ndjson: bytes | None = None,
        accept: Sequence[int] = (),
    ) -> Any:  # fmt: skip
        """A request, the cluster's versions asked first when not known yet."""
        if self.nodes.major is None:
            nodes = self.nodes.request("GET", "/_nodes?filter_path=nodes.*.version")
            self.nodes.major = lowest_major(nodes)
            versions = sorted({node["version"] for node in nodes["nodes"].values()})
            log.info("elasticsearch_version", versions=versions, compatible_with=self.nodes.major)
        return self.nodes.request(method, path, body, ndjson=ndjson, accept=accept)
