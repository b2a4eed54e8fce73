"""A deployment's queues as an operator sees them: message counts, dead letters, re-driving them.

An operator tool built on the transport's public API (`transports.azurequeue`: queue naming,
binding metadata, message envelopes), for the `flowcraft-celery queues` and `dlq` commands and
metrics exporters. With the transport's `redis_url`, control, reply and event queues live in
Redis (`TransientQueues`) and are listed from there. What each call costs in Azure requests:

* `queues()`: one `list` (per 5,000 queues) per storage account (the transport's
  `storage_accounts`: queue shards spread over several) plus one `get_properties` per queue
  counted (and a Redis SCAN plus one LLEN per transient queue);
* `oldest_visible()`: one `peek`;
* `dead_letters()`: one `peek` (Azure shows at most the first 32 visible messages);
* `requeue()`: per 32 messages one `receive`, then one `send` and one `delete` per message;
* `purge()`: per 32 messages one `receive`, one `delete` per message (and one blob `delete` per
  message whose body was stored out of line).

Azure's count of a queue is approximate and counts every message not yet deleted: ready ones,
delayed ones (a countdown, retry or sleep not yet due) and those a consumer holds.
Every call about a queue goes to the account holding it (`transports.azurequeue.Accounts`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage

from transports.azurequeue import (
    DEAD_LETTER_SUFFIX,
    Accounts,
    LargeBodyStore,
    Options,
    RedisKeys,
    TransientQueues,
    azure_queue_name,
    dead_letter_queue_name,
    namespace_queues,
    redis_from_url,
    wire,
)

#: Seconds a message taken by `requeue` or `purge` stays hidden while it is moved or deleted.
MOVE_VISIBILITY_SECONDS = 60
#: Azure's largest batch for receive and peek.
BATCH = 32


@dataclass(frozen=True)
class QueueInfo:
    """One queue of the deployment."""

    name: str
    azure_name: str
    kind: str
    messages: int | None = None
    transient: bool = False

    @property
    def dead_letter_of(self) -> str | None:
        """The queue whose dead letters this queue holds, if it is a dead-letter queue."""
        return self.name[: -len(DEAD_LETTER_SUFFIX)] if self.kind == "dead-letter" else None


@dataclass(frozen=True)
class DeadLetter:
    """A dead-lettered message: why it was moved, and what task it carries."""

    message_id: str
    inserted_on: float | None
    reason: str
    queue: str
    deliveries: int | None
    task: str | None = None
    task_id: str | None = None
    kwargs: Any = None
    args: Any = None
    stored_body: str | None = None
    raw: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"messageId": self.message_id, "insertedOn": self.inserted_on, "reason": self.reason,
                "queue": self.queue, "deliveries": self.deliveries, "task": self.task, "taskId": self.task_id,
                "args": self.args, "kwargs": self.kwargs, "storedBody": self.stored_body, "raw": self.raw}


def queue_kind(name: str) -> str:
    """`dead-letter`, `events` (Celery's event queues), `control` (pidbox, replies) or `tasks`."""
    if name.endswith(DEAD_LETTER_SUFFIX):
        return "dead-letter"
    if name.startswith("celeryev"):
        return "events"
    if "pidbox" in name:
        return "control"
    return "tasks"


def _celery_parts(payload: dict[str, Any]) -> tuple[str | None, str | None, Any, Any]:
    """Task name, task id, args and kwargs of a Kombu payload carrying a Celery message."""
    headers = payload.get("headers") or {}
    body: Any = payload.get("body")
    if (payload.get("properties") or {}).get("body_encoding") == "base64" and isinstance(body, str):
        try:
            body = base64.b64decode(body).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return headers.get("task"), headers.get("id"), None, None
    try:
        decoded = json.loads(body) if isinstance(body, str) else body
    except ValueError:
        decoded = None
    if isinstance(decoded, list) and len(decoded) >= 2:
        return headers.get("task"), headers.get("id"), decoded[0], decoded[1]
    return headers.get("task"), headers.get("id"), None, None


def _dead_letter_info(envelope: dict[str, Any]) -> dict[str, Any]:
    """What the transport noted when it dead-lettered a message (`reason`, `queue`, ...), else
    what the sender put in the message's `x-dead-letter-*` headers (a consumer that moved a
    message itself, with its own reason)."""
    info = envelope.get("dl")
    if isinstance(info, dict):
        return info
    payload = envelope.get("m")
    headers = (payload.get("headers") if isinstance(payload, dict) else None) or {}
    prefix = "x-dead-letter-"
    return {k[len(prefix):]: v for k, v in headers.items() if isinstance(k, str) and k.startswith(prefix)}


class QueueAdmin:
    """Counts, dead-letter inspection and re-driving for the queues under one Kombu prefix."""

    def __init__(self, accounts: Accounts, prefix: str, blob_container: str = Options.blob_container,
                 transient: TransientQueues | None = None) -> None:
        self._accounts = accounts
        self.prefix = prefix
        self._blobs = {number: LargeBodyStore(clients.blobs, blob_container)
                       for number, clients in enumerate(accounts.clients)}
        self._transient = transient

    @classmethod
    def from_connection(cls, connection: Any) -> QueueAdmin:
        """The admin for a Kombu connection to `azurequeue://` (its URL and transport options)."""
        transport_options = dict(connection.transport_options or {})
        options = Options.from_transport_options(transport_options)
        accounts = Accounts.build(connection.hostname or "", transport_options)
        transient = None
        if options.redis_url:
            client = redis_from_url(str(options.redis_url), options.redis_credential, decode_responses=True)
            transient = TransientQueues(client, RedisKeys(options.redis_namespace), options.transient_max_length)
        return cls(accounts, options.queue_name_prefix, options.blob_container, transient)

    def azure_name(self, queue: str) -> str:
        """The Azure name of a Kombu queue."""
        return azure_queue_name(queue, self.prefix)

    def client(self, queue: str) -> QueueClient:
        """The client of a Kombu queue's Azure queue, in the account holding it."""
        return self._accounts.of(queue).queues.get_queue_client(self.azure_name(queue))

    def queues(self, with_counts: bool = True, kinds: Collection[str] | None = None) -> list[QueueInfo]:
        """Every queue of this prefix (or those of `kinds`) in every storage account, sorted by name,
        with its approximate message count."""
        found: list[QueueInfo] = []
        for number, service in self._accounts.queue_services():
            for props, record in namespace_queues(service, self.prefix):
                held_here = self._accounts.index(record.name) == number  # else a stray of an older account list
                if held_here and (kinds is None or queue_kind(record.name) in kinds):
                    found.append(QueueInfo(record.name, str(props.name), queue_kind(record.name),
                                           transient=record.expires_s is not None))
        if with_counts:
            found = [QueueInfo(q.name, q.azure_name, q.kind, self.count(q.name), q.transient) for q in found]
        if self._transient is not None:
            for name in self._transient.names():
                if kinds is None or queue_kind(name) in kinds:
                    count = self._transient.size(name) if with_counts else None
                    found.append(QueueInfo(name, f"redis:{self._transient.keys.messages(name)}", queue_kind(name),
                                           count, transient=True))
        return sorted(found, key=lambda q: q.name)

    def count(self, queue: str) -> int | None:
        """Azure's approximate count of the queue (None when it does not exist)."""
        try:
            return int(self.client(queue).get_queue_properties().approximate_message_count or 0)
        except ResourceNotFoundError:
            return None

    def oldest_visible(self, queue: str) -> float | None:
        """When the queue's oldest visible message was inserted (epoch seconds): one `peek`; None
        when no message is visible or the queue does not exist."""
        try:
            peeked = list(self.client(queue).peek_messages(max_messages=1))
        except ResourceNotFoundError:
            return None
        inserted = peeked[0].inserted_on if peeked else None
        return None if inserted is None else inserted.timestamp()

    @staticmethod
    def dead_letter_queue(queue: str) -> str:
        """The dead-letter queue of `queue` (given either the queue or its dead-letter queue)."""
        return queue if queue.endswith(DEAD_LETTER_SUFFIX) else dead_letter_queue_name(queue)

    def dead_letters(self, queue: str, limit: int = BATCH) -> list[DeadLetter]:
        """The first `limit` (at most 32) messages of the queue's dead-letter queue, unchanged."""
        dlq = self.dead_letter_queue(queue)
        try:
            peeked = self.client(dlq).peek_messages(max_messages=max(1, min(limit, BATCH)))
        except ResourceNotFoundError:
            return []
        return [self._describe(message, dlq) for message in peeked]

    def _describe(self, message: QueueMessage, dlq: str) -> DeadLetter:
        text = str(message.content)
        inserted = message.inserted_on.timestamp() if message.inserted_on else None
        original = dlq[: -len(DEAD_LETTER_SUFFIX)]
        try:
            envelope = wire.decode(text)
        except wire.PoisonMessage as exc:
            return DeadLetter(message.id, inserted, f"not an azurequeue envelope: {exc}", original, None,
                              raw=text[:500])
        info = _dead_letter_info(envelope)
        reason, queue = str(info.get("reason", "unknown")), str(info.get("queue") or original)
        deliveries = info.get("delivery-count")
        if "raw" in envelope:
            return DeadLetter(message.id, inserted, reason, queue, deliveries, raw=str(envelope["raw"])[:500])
        if "blob" in envelope:
            return DeadLetter(message.id, inserted, reason, queue, deliveries, stored_body=str(envelope["blob"]))
        payload = envelope["m"]
        task, task_id, args, kwargs = _celery_parts(payload)
        return DeadLetter(message.id, inserted, reason, queue, deliveries, task, task_id, kwargs, args,
                          headers=dict(payload.get("headers") or {}))

    def _take(self, dlq: str, count: int = BATCH) -> list[QueueMessage]:
        """Receive the next batch of a dead-letter queue, hidden while it is handled."""
        try:
            pages = self.client(dlq).receive_messages(messages_per_page=count, max_messages=count,
                                                      visibility_timeout=MOVE_VISIBILITY_SECONDS)
            return list(next(pages.by_page(), []))
        except ResourceNotFoundError:
            return []

    def requeue(self, queue: str, limit: int | None = None) -> tuple[int, int]:
        """Send dead letters back to the queue they came from (a message is sent, then deleted from
        the dead-letter queue: a crash in between only duplicates it). Returns (re-driven, skipped:
        bodies that were not messages at all, left in place)."""
        dlq = self.dead_letter_queue(queue)
        moved = skipped = 0
        while limit is None or moved < limit:
            batch = self._take(dlq, BATCH if limit is None else max(1, min(BATCH, limit - moved)))
            if not batch:
                break
            for message in batch:
                try:
                    envelope = wire.decode(str(message.content))
                except wire.PoisonMessage:
                    envelope = {"raw": ""}
                if "raw" in envelope:
                    skipped += 1
                    continue
                info = _dead_letter_info(envelope)
                target = str(info.get("queue") or dlq[: -len(DEAD_LETTER_SUFFIX)])
                self.client(target).send_message(wire.encode({k: v for k, v in envelope.items() if k != "dl"}))
                self.client(dlq).delete_message(message.id, message.pop_receipt)
                moved += 1
        return moved, skipped

    def purge(self, queue: str) -> int:
        """Delete every message of the queue's dead-letter queue (and stored bodies); the count."""
        dlq = self.dead_letter_queue(queue)
        deleted = 0
        while batch := self._take(dlq):
            for message in batch:
                try:
                    reference = wire.decode(str(message.content)).get("blob")
                except wire.PoisonMessage:
                    reference = None
                self.client(dlq).delete_message(message.id, message.pop_receipt)
                if reference:
                    self._blobs[self._accounts.index(dlq)].delete(str(reference))
                deleted += 1
        return deleted
