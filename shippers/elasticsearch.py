"""The Elasticsearch adapter of the delivery contract (``shippers/delivery.py``): index
templates, bulk ``create`` with a result per item, retention of daily indices.

Each event is created with a deterministic ``_id`` in a daily index chosen from its own
timestamp, so a re-sent event is answered 409 and never indexed twice.

The client speaks the REST compatibility mode of the cluster's major version, not its own:
a 9.x client asks for ``compatible-with=9``, which an 8.x server refuses with HTTP 400. The
cluster's versions are asked once, before the first request (``GET /_nodes``, which needs the
``monitor`` cluster privilege, as for Beats; ``GET /`` is not in every distribution).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any, cast

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import (
    ConnectionTimeout,
    HttpHeaders,
    Transport,
    TransportApiResponse,
    TransportError,
)
from elastic_transport.client_utils import DEFAULT, DefaultType
from elasticsearch import ApiError, Elasticsearch
from elasticsearch.serializer import OrjsonSerializer

from hubkeeper.config import ShipperElasticsearchConfig
from hubkeeper.log import get_logger
from hubkeeper.shippers.delivery import CREATED, DAILY_INDEX, ItemResult, Unavailable
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

_COMPATIBLE = re.compile(r"application/vnd\.elasticsearch\+([\w.-]+); ?compatible-with=\d+")


def compatible_mimetype(value: str, major: int | None) -> str:
    """An ``Accept`` or ``Content-Type`` value with its compatibility version set to
    ``major``; the plain type (``application/json``), which every major takes, when None."""
    if major is None:
        return _COMPATIBLE.sub(r"application/\1", value)
    return _COMPATIBLE.sub(rf"application/vnd.elasticsearch+\1; compatible-with={major}", value)


def lowest_major(nodes: Mapping[str, Any]) -> int:
    """The lowest major version among the nodes (``GET /_nodes`` filtered to
    ``nodes.*.version``): during a rolling upgrade an old node refuses the new major's
    compatibility mode, while a new one still takes the previous major's."""
    return min(int(node["version"].split(".")[0]) for node in nodes["nodes"].values())


class CompatibleTransport(Transport):
    """The client's transport, sending the compatibility headers of ``major`` (plain JSON
    while it is None) instead of the client's own major."""

    major: int | None = None

    def perform_request(  # type: ignore[override]
        self, method: str, target: str, *,
        headers: Mapping[str, Any] | DefaultType = DEFAULT, **options: Any,
    ) -> TransportApiResponse:  # fmt: skip
        if not isinstance(headers, DefaultType):
            headers = HttpHeaders(headers)
            for name in ("accept", "content-type"):
                if name in headers:
                    headers[name] = compatible_mimetype(headers[name], self.major)
        return super().perform_request(method, target, headers=headers, **options)


# --- the client ------------------------------------------------------------------------


class ElasticsearchOutput:
    """Bulk ``create`` requests to the configured nodes (no client-side retries: the
    pipeline decides per item)."""

    def __init__(self, config: ShipperElasticsearchConfig) -> None:
        self.config = config
        options: dict[str, Any] = {
            "request_timeout": config.timeout,
            "max_retries": 0,
            "retry_on_timeout": False,
        }
        if config.api_key is not None:
            options["api_key"] = config.api_key.reveal()
        if config.username is not None and config.password is not None:
            options["basic_auth"] = (config.username, config.password.reveal())
        if config.ca_file is not None:
            options["ca_certs"] = config.ca_file
        self.client = Elasticsearch(
            config.hosts, transport_class=CompatibleTransport, serializer=OrjsonSerializer(),
            **options,
        )  # fmt: skip
        self.transport = cast(CompatibleTransport, self.client.transport)

    def install_templates(self) -> None:
        """The index templates, with the ECS types this cluster's mappers support."""
        supported = supported_types(self._accepts)
        for name, body in templates(self.config, supported).items():
            self._call(lambda name=name, body=body: self.client.indices.put_index_template(
                name=name, **body
            ))  # fmt: skip

    def _accepts(self, template: dict[str, Any]) -> bool:
        """Whether the cluster takes ``template`` (simulated: nothing is stored); a 400
        names a mapper type it lacks."""
        simulate = self.client.options(ignore_status=400).indices.simulate_template
        answer = self._call(lambda: simulate(index_patterns=[PROBE_PATTERN], template=template))
        return "error" not in answer

    def bulk(self, records: Sequence[Record]) -> list[ItemResult]:
        """One bulk request; a result per record, in order. Raises :class:`Unavailable`."""
        body = bulk_body(records)
        response = self._call(
            lambda: self.client.bulk(
                operations=body, filter_path="errors,items.*.status,items.*.error"
            )
        )
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
        found = self._call(
            lambda: self.client.indices.get(index=patterns, expand_wildcards="open,closed")
        )
        old = expired(list(found), today, self.config.retention_days)
        for name in old:
            self._call(lambda name=name: self.client.indices.delete(index=name))
        return old

    def _call(self, request: Any) -> Any:
        """Run a client call, the cluster's versions asked first when not known yet."""
        if self.transport.major is None:
            nodes = self._request(lambda: self.client.nodes.info(filter_path="nodes.*.version"))
            self.transport.major = lowest_major(nodes)
            versions = sorted({node["version"] for node in nodes["nodes"].values()})
            log.info(
                "elasticsearch_version", versions=versions, compatible_with=self.transport.major
            )
        return self._request(request)

    @staticmethod
    def _request(request: Any) -> Any:
        """Run a client call; every failure becomes :class:`Unavailable` (a message
        without the request, which would carry credentials). A refusal (credentials, a bad
        template) keeps the server's reasons and is tried again later like the rest."""
        try:
            return request().body
        except ApiError as error:
            if error.status_code == 429 or error.status_code >= 500:
                raise Unavailable(f"HTTP {error.status_code}: {error.error}") from None
            raise Unavailable(str(error)) from None
        except (TransportConnectionError, ConnectionTimeout, TransportError) as error:
            raise Unavailable(type(error).__name__) from None
