"""The Elasticsearch adapter of the delivery contract (``shippers/delivery.py``): index
templates, bulk ``create`` with a result per item, retention of daily indices.

Each event is created with a deterministic ``_id`` in a daily index chosen from its own
timestamp, so a re-sent event is answered 409 and never indexed twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, TransportError
from elasticsearch import ApiError, Elasticsearch

from hubkeeper.config import ShipperElasticsearchConfig
from shippers.delivery import DAILY_INDEX, ItemResult, Unavailable
from shippers.mapping import PROBE_PATTERN, supported_types, templates
from shippers.store import Record

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
        self.client = Elasticsearch(config.hosts, **options)

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
        parts: list[bytes] = []
        for record in records:  # index names and ids are plain: no escaping needed
            parts.append(
                f'{{"create":{{"_index":"{record.index}","_id":"{record.id}"}}}}\n'.encode()
            )
            parts.append(record.doc + b"\n")
        body = b"".join(parts)
        response = self._call(
            lambda: self.client.bulk(operations=body, filter_path="items.*.status,items.*.error")
        )
        items = response["items"]
        if len(items) != len(records):
            raise Unavailable(f"bulk answered {len(items)} items for {len(records)}")
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

    @staticmethod
    def _call(request: Any) -> Any:
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
