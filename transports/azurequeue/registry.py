"""Exchange bindings shared by every process, kept in the metadata of the Azure queues themselves.

Each queue this transport creates carries metadata naming its Kombu queue, its bindings
(exchange, exchange type, routing key), its message TTL and, for transient queues (auto-delete
or `x-expires`), a heartbeat. Listing the queues under the prefix with their metadata gives any
process the full routing table in one request per storage account (`accounts`); deleting a
queue deletes its bindings with it.
Transient queues whose heartbeat is older than their expiry are deleted by whoever lists them.
With Redis, a version counter there tells when the table changed: a process re-lists only then
(or once a minute), instead of every `binding_cache_seconds`, so publishing events and replies
costs no listing.
Binding is read-merge-write on one queue's metadata: two processes binding the same queue to
different exchanges at the same instant could lose one binding (Celery binds each queue from
one place: the worker declaring it, or the pidbox/event consumer owning it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueServiceClient
from kombu.transport.virtual.exchange import TopicExchange

from .naming import listing_prefix

logger = logging.getLogger(__name__)

_TOPIC = TopicExchange(None)
#: Longest time a process trusts an unchanged version counter instead of listing the queues.
VERSION_TRUST = 60.0

Binding = tuple[str, str, str]
"""(exchange, exchange type, routing key)"""

Route = tuple[str, str | None, str]
"""(routing key, topic pattern or None, Kombu queue name): a row of a Kombu routing table"""


def namespace_tag(prefix: str) -> str:
    """Return the metadata value marking queues of Kombu prefix `prefix` (never empty)."""
    return "ns:" + quote(prefix, safe="")


def namespace_queues(service: QueueServiceClient, prefix: str) -> Iterator[tuple[Any, QueueRecord]]:
    """Every Azure queue of Kombu prefix `prefix` with its record, as (queue properties, record);
    a queue whose binding metadata cannot be read is skipped with a WARNING."""
    namespace = namespace_tag(prefix)
    for props in service.list_queues(name_starts_with=listing_prefix(prefix), include_metadata=True):
        meta = props.metadata or {}
        if meta.get("kombuns") != namespace or "kombuname" not in meta:
            continue
        try:
            record = QueueRecord.from_metadata(meta)
        except (ValueError, KeyError):
            logger.warning("Ignoring unreadable binding metadata on queue %s", props.name)
            continue
        yield props, record


@dataclass
class QueueRecord:
    """What the registry knows about one Kombu queue."""

    name: str
    bindings: set[Binding] = field(default_factory=set)
    message_ttl_ms: int | None = None
    expires_s: float | None = None
    heartbeat: float = 0.0

    def metadata(self, namespace: str) -> dict[str, str]:
        """Render the record as Azure queue metadata."""
        meta = {
            "kombuns": namespace_tag(namespace),
            "kombuname": quote(self.name, safe=""),
            "kombubindings": quote(json.dumps(sorted(self.bindings)), safe=""),
        }
        if self.message_ttl_ms is not None:
            meta["kombumessagettl"] = str(self.message_ttl_ms)
        if self.expires_s is not None:
            meta["kombuexpires"] = str(self.expires_s)
            meta["kombuheartbeat"] = str(int(self.heartbeat))
        return meta

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> QueueRecord:
        """Parse Azure queue metadata written by `metadata`."""
        raw = json.loads(unquote(meta.get("kombubindings", "%5B%5D")))
        record = cls(name=unquote(meta["kombuname"]))
        record.bindings = {(str(e), str(t), str(k)) for e, t, k in raw}
        if "kombumessagettl" in meta:
            record.message_ttl_ms = int(meta["kombumessagettl"])
        if "kombuexpires" in meta:
            record.expires_s = float(meta["kombuexpires"])
            record.heartbeat = float(meta.get("kombuheartbeat", "0"))
        return record


class BindingRegistry:
    """Read and write the cross-process binding table, with a short-lived cache of it."""

    def __init__(
        self,
        services: Sequence[QueueServiceClient],
        client_for: Callable[[str], QueueClient],
        prefix: str,
        cache_seconds: float,
        stale_after: float,
        version: Callable[[], str | None] | None = None,
        bump: Callable[[], None] | None = None,
    ) -> None:
        self._services = tuple(services)
        self._listed: dict[int, dict[str, QueueRecord]] = {}
        self._client_for = client_for
        self._prefix = prefix
        self._cache_seconds = cache_seconds
        self._stale_after = stale_after
        self._lock = threading.Lock()
        self._records: dict[str, QueueRecord] = {}
        self._declared: dict[str, QueueRecord] = {}
        self._fetched_at = float("-inf")
        self._checked_at = float("-inf")
        self._version = version
        self._bump = bump
        self._seen_version: str | None = None

    def record_for_new_queue(self, name: str, arguments: dict[str, Any], auto_delete: bool) -> (
        QueueRecord
    ):
        """Describe a queue being declared, from its AMQP arguments."""
        record = QueueRecord(name=name)
        if arguments.get("x-message-ttl") is not None:
            record.message_ttl_ms = int(arguments["x-message-ttl"])
        if auto_delete or arguments.get("x-expires") is not None:
            expires_ms = arguments.get("x-expires")
            record.expires_s = max(self._stale_after, (expires_ms or 0) / 1000.0)
            record.heartbeat = time.time()
        return record

    def metadata(self, record: QueueRecord) -> dict[str, str]:
        """Render `record` for this registry's namespace."""
        return record.metadata(self._prefix)

    def bind(self, queue: str, binding: Binding, change: Callable[[set[Binding]], None]) -> None:
        """Add or remove (via `change`) a binding in the queue's metadata: read, merge, write."""
        client = self._client_for(queue)
        props = client.get_queue_properties()
        meta = dict(props.metadata or {})
        record = (
            QueueRecord.from_metadata(meta) if "kombuname" in meta else QueueRecord(name=queue)
        )
        change(record.bindings)
        with self._lock:
            declared = self._declared.get(queue)
            if declared is not None:
                record.message_ttl_ms = declared.message_ttl_ms
                record.expires_s, record.heartbeat = declared.expires_s, time.time()
                self._declared[queue] = record
            self._records[queue] = record
        client.set_queue_metadata(metadata=self.metadata(record))
        if self._bump is not None:
            self._bump()

    def declare(self, record: QueueRecord) -> None:
        """Remember a queue this process declared, to keep it alive or recreate it if lost."""
        with self._lock:
            self._declared[record.name] = record

    def declared(self, queue: str) -> QueueRecord | None:
        """Return what this process declared about `queue`, if anything."""
        with self._lock:
            return self._declared.get(queue)

    def heartbeat(self, queues: Iterable[str]) -> None:
        """Refresh the heartbeat of the transient `queues` this process still consumes from."""
        now = time.time()
        with self._lock:
            records = [
                self._declared[q]
                for q in queues
                if q in self._declared and self._declared[q].expires_s is not None
            ]
        for record in records:
            record.heartbeat = now
            try:
                self._client_for(record.name).set_queue_metadata(metadata=self.metadata(record))
            except ResourceNotFoundError:
                logger.warning("Queue %r vanished while this process consumes it", record.name)

    def forget(self, queue: str) -> None:
        """Drop a deleted queue from the cache and from the queues this process keeps alive."""
        with self._lock:
            self._records.pop(queue, None)
            self._declared.pop(queue, None)
        if self._bump is not None:
            self._bump()

    def refresh(self) -> None:
        """List every queue of the namespace with its metadata, in every account; delete stale
        transient queues. A further account that fails keeps the records last listed there (its
        shards stay routable while it is down; the main account's failure is the caller's)."""
        records: dict[str, QueueRecord] = {}
        stale: list[tuple[QueueServiceClient, str]] = []
        version = self._version() if self._version is not None else None
        now = time.time()
        for number, service in enumerate(self._services):
            listed: dict[str, QueueRecord] = {}
            try:
                for props, record in namespace_queues(service, self._prefix):
                    if record.expires_s is not None and now - record.heartbeat > record.expires_s:
                        stale.append((service, props.name))
                        continue
                    listed[record.name] = record
            except AzureError as exc:
                if number == 0:
                    raise
                logger.warning("Could not list the queues of storage account %d (keeping its last listing): %s",
                               number, exc)
                listed = self._listed.get(number, {})
            self._listed[number] = listed
            records.update(listed)
        with self._lock:
            self._records = records
            self._fetched_at = self._checked_at = time.monotonic()
            self._seen_version = version
        for service, name in stale:
            logger.info("Deleting queue %s: its consumer stopped heartbeating", name)
            with contextlib.suppress(ResourceNotFoundError):
                service.delete_queue(name)

    def _ensure_fresh(self, max_age: float) -> None:
        """Refresh the cache if it is older than `max_age` seconds and may have changed."""
        now = time.monotonic()
        if now - self._checked_at <= max_age:
            return
        if self._version is not None and now - self._fetched_at <= VERSION_TRUST:
            version = self._version()
            if version is not None and version == self._seen_version:
                self._checked_at = now
                return
        self.refresh()

    def recheck(self, max_age: float) -> None:
        """Re-list the bindings if the cache is older than `max_age` and may have changed."""
        self._ensure_fresh(max_age)

    def routes(self, exchange: str, max_age: float | None = None) -> list[Route]:
        """Return the routing table of `exchange` across all processes."""
        self._ensure_fresh(self._cache_seconds if max_age is None else max_age)
        with self._lock:
            records = list(self._records.values())
        table: list[Route] = []
        for record in records:
            for bound_exchange, kind, key in record.bindings:
                if bound_exchange == exchange:
                    pattern = _TOPIC.key_to_pattern(key) if kind == "topic" else None
                    table.append((key, pattern, record.name))
        return table

    def exchange_type(self, exchange: str) -> str | None:
        """Return the type of `exchange` as recorded by whoever bound a queue to it."""
        with self._lock:
            for record in self._records.values():
                for bound_exchange, kind, _ in record.bindings:
                    if bound_exchange == exchange:
                        return kind
        return None

    def message_ttl_ms(self, queue: str) -> int | None:
        """Return the `x-message-ttl` a queue was declared with, if the cache knows it."""
        with self._lock:
            record = self._records.get(queue)
        return record.message_ttl_ms if record else None

    def age(self) -> float:
        """Seconds since the cache was last refreshed."""
        return time.monotonic() - self._fetched_at
