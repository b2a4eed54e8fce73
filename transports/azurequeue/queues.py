"""The Azure side of the transport: queues, and the life of a message on them (its `QueueBackend`).

Creating and deleting queues, binding them (`registry`), sending (delayed until due, large bodies to Blob Storage, a
wake-up token after the send, several messages as one bundle inside `bundles.bundled()`),
receiving a batch and turning each message into held Kombu payloads (or dead-lettering it, or
hopping one due beyond Azure's 7-day limit), and settling a held message by its delivery tag:
delete on ack, visible again on requeue, moved to `<queue>-dlq` on reject (a bundle's parts one by
one, see `bundles`).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage

from . import bundles, wire
from .accounts import Accounts
from .blobs import LargeBodyStore
from .directqueue import DirectQueue
from .httpenv import HttpEnvironment
from .leases import Lease, LeaseKeeper, lost_hold
from .naming import DEAD_LETTER_SUFFIX, azure_queue_name, dead_letter_queue_name
from .options import Options
from .registry import BindingRegistry
from .wakeup import WakeSignals

if TYPE_CHECKING:
    from .redisside import RedisSide

logger = logging.getLogger(__name__)

#: A received message due later than this (seconds) is re-sent hidden instead of kept here.
HOLD_LIMIT = 2.0
#: Threads that send the bundles of one `bundled()` block in parallel.
BUNDLE_SEND_THREADS = 4

Accepted = tuple[dict[str, Any], float | None]
"""A held Kombu payload and when it is due (epoch seconds; None: now)"""


class AzureQueues:
    """Queue and message operations of one connection on one storage account."""

    def __init__(
        self,
        options: Options,
        accounts: Callable[[], Accounts],
        keeper: LeaseKeeper,
        redis: Callable[[], RedisSide | None],
    ) -> None:
        self.options = options
        self._accounts = accounts
        self.keeper = keeper
        self._redis = redis
        self._registry: BindingRegistry | None = None
        self._blobs: dict[int, LargeBodyStore] = {}
        self._queue_clients: dict[str, QueueClient] = {}
        self._direct: dict[str, DirectQueue | None] = {}
        self._environment = HttpEnvironment()
        self._declared: set[str] = set()
        self._sender_pool: tuple[int, ThreadPoolExecutor] | None = None

    def _signals(self) -> WakeSignals | None:
        """Wake-up tokens (None without Redis)."""
        side = self._redis()
        return side.signals if side is not None else None

    def _done_parts(self) -> bundles.DoneParts | None:
        """The settled parts of bundles (None without Redis)."""
        side = self._redis()
        return side.done_parts if side is not None else None

    @property
    def registry(self) -> BindingRegistry:
        """The shared binding registry (Azure queue metadata)."""
        if self._registry is None:
            signals = self._signals()
            self._registry = BindingRegistry(
                [service for _, service in self._accounts().queue_services()],
                self.queue_client,
                self.options.queue_name_prefix,
                self.options.binding_cache_seconds,
                self.options.stale_after,
                version=signals.bindings_version if signals is not None else None,
                bump=signals.bump_bindings if signals is not None else None,
            )
        return self._registry

    def blobs(self, queue: str) -> LargeBodyStore:
        """Where the large bodies of `queue` go: the blob service of the account holding it."""
        accounts = self._accounts()
        number = accounts.index(queue)
        store = self._blobs.get(number)
        if store is None:
            store = self._blobs[number] = LargeBodyStore(accounts.clients[number].blobs, self.options.blob_container)
        return store

    def azure_name(self, queue: str) -> str:
        """Return the Azure queue name of a Kombu queue."""
        return azure_queue_name(queue, self.options.queue_name_prefix)

    def queue_client(self, queue: str) -> QueueClient:
        """Return the (cached) client of a Kombu queue's Azure queue."""
        client = self._queue_clients.get(queue)
        if client is None:
            client = self._accounts().of(queue).queues.get_queue_client(self.azure_name(queue))
            self._queue_clients[queue] = client
        return client

    def direct(self, queue: str) -> DirectQueue | None:
        """The requests-signed-here path of a Kombu queue's sends, receives and deletes
        (`directqueue`), or None where it does not apply or the `direct_requests` option turned it off."""
        if queue not in self._direct:
            self._direct[queue] = (DirectQueue.for_client(self.queue_client(queue), self._environment,
                                                          self._accounts().of(queue).queue_watch)
                                   if self.options.direct_requests else None)
        return self._direct[queue]

    def declare(self, queue: str, arguments: dict[str, Any], auto_delete: bool) -> None:
        """Create the queue with its registry metadata, once per connection."""
        if queue in self._declared:
            return
        record = self.registry.record_for_new_queue(queue, arguments, auto_delete)
        self.registry.declare(record)
        self._create(queue)
        self._declared.add(queue)

    def _create(self, queue: str) -> None:
        """Create the Azure queue with what this process knows of its metadata."""
        record = self.registry.declared(queue)
        metadata = self.registry.metadata(record) if record is not None else None
        with contextlib.suppress(ResourceExistsError):
            self.queue_client(queue).create_queue(metadata=metadata)

    def bind(self, queue: str, exchange: str, kind: str, routing_key: str) -> None:
        """Add a binding to the queue's metadata, where every process finds it."""
        binding = (exchange, kind, routing_key)
        self.registry.bind(queue, binding, lambda bindings: bindings.add(binding))

    def unbind(self, queue: str, exchange: str, kind: str, routing_key: str) -> None:
        """Remove a binding from the queue's metadata."""
        binding = (exchange, kind, routing_key)
        self.registry.bind(queue, binding, lambda bindings: bindings.discard(binding))

    def delete(self, queue: str) -> None:
        """Delete the Azure queue once settlements in flight are done; a queue already gone is fine."""
        self.keeper.flush()
        self._declared.discard(queue)
        self.registry.forget(queue)
        with contextlib.suppress(ResourceNotFoundError):
            self.queue_client(queue).delete_queue()
        self._queue_clients.pop(queue, None)

    def size(self, queue: str) -> int:
        """Approximate message count, invisible ones included, after the acks already made here."""
        self.keeper.flush()
        props = self.queue_client(queue).get_queue_properties()
        return props.approximate_message_count or 0

    def existing_size(self, queue: str) -> int | None:
        """Approximate message count of the queue; None when it does not exist."""
        try:
            props = self.queue_client(queue).get_queue_properties()
        except ResourceNotFoundError:
            return None
        return props.approximate_message_count or 0

    def purge(self, queue: str) -> int:
        """Delete every message of the queue and return about how many there were."""
        count = self.size(queue)
        self.queue_client(queue).clear_messages()
        return count

    def put(self, queue: str, payload: dict[str, Any]) -> None:
        """Send a Kombu payload: hidden until (about a second before) its ETA, with its TTL."""
        now = time.time()
        due = wire.due_time(payload)
        hidden = wire.initial_visibility(due, now)
        ttl = wire.time_to_live(payload, self.registry.message_ttl_ms(queue), hidden)
        if (due is None or due <= now) and self.options.bundle_size > 1 and self._signals() is not None \
                and bundles.collect(self, queue, payload, ttl):
            return
        envelope: dict[str, Any] = {"m": payload}
        if due is not None and due > now:
            envelope["due"] = due
        self.send_envelope(queue, envelope, hidden, ttl)

    def send_bundle(self, queue: str, payloads: list[tuple[dict[str, Any], int | None]]) -> None:
        """Send collected immediate messages as bundles of up to `bundle_size` parts of one
        time-to-live that fit under the large-message threshold (a message too large for any
        bundle goes alone), on up to `BUNDLE_SEND_THREADS` threads; each bundle is signalled as
        soon as it is sent."""
        limit = self.options.large_message_threshold - wire.ENVELOPE_OVERHEAD
        messages: list[tuple[str, int | None]] = []
        chunk: list[str] = []
        chunk_ttl: int | None = None
        length = 0
        for payload, ttl in payloads:
            text = wire.encode(payload)
            if len(text) > limit:
                self.send_envelope(queue, {"m": payload}, 0, ttl)
                continue
            if chunk and (len(chunk) >= self.options.bundle_size or length + len(text) > limit or ttl != chunk_ttl):
                messages.append((wire.encode_parts(chunk), chunk_ttl))
                chunk, length = [], 0
            chunk.append(text)
            chunk_ttl = ttl
            length += len(text) + 1
        if chunk:
            messages.append((wire.encode_parts(chunk), chunk_ttl))
        if len(messages) <= 1:
            for text, ttl in messages:
                self.send_text(queue, text, 0, ttl, coalesce=False)
            return
        for future in [self._senders().submit(self.send_text, queue, text, 0, ttl, False) for text, ttl in messages]:
            future.result()

    def _senders(self) -> ThreadPoolExecutor:
        """This process's threads for sending bundles (a forked child makes its own)."""
        if self._sender_pool is None or self._sender_pool[0] != os.getpid():
            self._sender_pool = (os.getpid(), ThreadPoolExecutor(BUNDLE_SEND_THREADS,
                                                                 thread_name_prefix="azurequeue-send"))
        return self._sender_pool[1]

    def send_envelope(
        self, queue: str, envelope: dict[str, Any], hidden: int = 0, ttl: int | None = None
    ) -> None:
        """Send an envelope (a too-large payload goes to Blob Storage first), then signal it."""
        text = wire.encode(envelope)
        if len(text) > self.options.large_message_threshold and "m" in envelope:
            reference = self.blobs(queue).put(self.azure_name(queue), wire.encode(envelope["m"]))
            slim = {k: v for k, v in envelope.items() if k != "m"}
            text = wire.encode({**slim, "blob": reference})
        self.send_text(queue, text, hidden, ttl)

    def send_text(self, queue: str, text: str, hidden: int = 0, ttl: int | None = None,
                  coalesce: bool = True) -> None:
        """Send envelope text as one Azure message, then signal it (`coalesce`: a burst's
        signals may be pushed together; a bundle is a batch already, so it is signalled alone)."""
        client = self.queue_client(queue)
        started, began = time.time(), time.monotonic()
        direct = self.direct(queue)
        try:
            if direct is None or not direct.send(text, hidden or None, ttl):
                client.send_message(text, visibility_timeout=hidden or None, time_to_live=ttl)
        except ResourceNotFoundError:
            self._create(queue)
            client.send_message(text, visibility_timeout=hidden or None, time_to_live=ttl)
        signals = self._signals()
        if signals is not None and hidden < wire.MAX_VISIBILITY_SECONDS:
            signals.notify(queue, started + hidden if hidden else None, coalesce=coalesce, began=began)

    def receive(self, queue: str, count: int) -> list[QueueMessage]:
        """Receive up to `count` messages, hiding them for the visibility timeout."""
        client = self.queue_client(queue)
        direct = self.direct(queue)
        received = direct.receive(count, self.options.visibility_timeout) if direct is not None else None
        if received is not None:
            return received
        try:
            pages = client.receive_messages(
                messages_per_page=count,
                max_messages=count,
                visibility_timeout=self.options.visibility_timeout,
            )
            return list(next(pages.by_page(), []))
        except ResourceNotFoundError:
            logger.warning("Queue %r is gone; recreating it", queue)
            self._create(queue)
            return []

    def receive_batch(self, queue: str, count: int, no_ack: bool) -> tuple[int, list[Accepted]]:
        """Receive up to `count` messages and hold them all: how many Azure messages came, and
        the deliveries they brought (a bundle brings several, a poison message none)."""
        received = self.receive(queue, count)
        return len(received), [accepted for message in received for accepted in self.accept(queue, message, no_ack)]

    def get(self, queue: str) -> dict[str, Any] | None:
        """Receive one deliverable message for `basic_get`, held until settled (poison messages
        are dead-lettered and skipped, one received before its due time goes back hidden until
        then, a bundle's further parts go back on their own)."""
        while True:
            received = self.receive(queue, 1)
            if not received:
                return None
            accepted = self.accept(queue, received[0], no_ack=False)
            if not accepted:
                continue
            (payload, due), rest = accepted[0], accepted[1:]
            for extra, _ in rest:
                self.requeue(extra["properties"]["delivery_tag"])
            early = (due or 0.0) - time.time()
            if early <= 0:
                return payload
            lease = self.keeper.take(payload["properties"]["delivery_tag"])
            if lease is not None:
                self.keeper.settle(lease, partial(self.release, after=math.ceil(early)))
            return None

    def accept(self, queue: str, received: QueueMessage, no_ack: bool) -> list[Accepted]:
        """Turn a received message into held Kombu payloads with their due time (one, or a
        bundle's parts not settled yet), or dead-letter/hop it (none)."""
        lease = Lease(
            queue=queue,
            client=self.queue_client(queue),
            message_id=received.id,
            pop_receipt=received.pop_receipt or "",
            dequeue_count=received.dequeue_count or 1,
        )
        text = str(received.content)
        try:
            envelope = wire.decode(text)
            lease.blob = envelope.get("blob")
            lease.envelope = envelope
            earlier = envelope.get("rd")  # deliveries of a bundle's part before it was re-sent alone
            if isinstance(earlier, int) and not isinstance(earlier, bool) and earlier > 0:
                lease.dequeue_count += earlier
            if "ms" in envelope:
                return self._accept_bundle(lease, envelope["ms"], no_ack)
            payload = self.unpack(queue, envelope)
        except wire.PoisonMessage as exc:
            self.dead_letter(lease, {"raw": text}, f"undecodable body: {exc}")
            return []
        limit = self.options.max_delivery_count
        if lease.dequeue_count > limit and not queue.endswith(DEAD_LETTER_SUFFIX):
            self.dead_letter(lease, envelope, f"delivered {lease.dequeue_count} times (limit {limit})")
            return []
        due = envelope.get("due")
        if due is not None and float(due) > time.time() + HOLD_LIMIT:
            self.hop(lease, envelope)
            return []
        tag = uuid.uuid4().hex
        props = payload["properties"]
        props["delivery_tag"] = tag
        props.setdefault("delivery_info", {})["redelivered"] = lease.dequeue_count > 1
        if no_ack:
            self.keeper.settle_later(lease, self.delete_message)
        else:
            self.keeper.hold(tag, lease)
        return [(payload, float(due) if due is not None else None)]

    def _accept_bundle(
        self, lease: Lease, parts: list[dict[str, Any]], no_ack: bool
    ) -> list[Accepted]:
        """Hold a bundle's parts not settled in an earlier delivery, each with its own tag; a
        bundle delivered too often has those parts dead-lettered one by one."""
        lease.bundle = True
        done_parts = self._done_parts()
        settled = done_parts.get(lease.queue, lease.message_id) \
            if done_parts is not None and lease.dequeue_count > 1 else set()
        open_parts = [(index, part) for index, part in enumerate(parts) if index not in settled]
        limit = self.options.max_delivery_count
        if open_parts and lease.dequeue_count > limit and not lease.queue.endswith(DEAD_LETTER_SUFFIX):
            reason = f"delivered {lease.dequeue_count} times (limit {limit})"
            logger.error("Moving %d part(s) of bundle %s of queue %r to its dead-letter queue: %s",
                         len(open_parts), lease.message_id, lease.queue, reason)

            def move(held: Lease) -> None:
                for _, part in open_parts:
                    self._send_dead(held, {"m": part}, reason)
                self._delete_bundle(held)

            self.keeper.settle_later(lease, move)
            return []
        if not open_parts:
            self.keeper.settle_later(lease, self._delete_bundle)
            return []
        for index, part in open_parts:
            tag = uuid.uuid4().hex
            props = part["properties"]
            props["delivery_tag"] = tag
            props.setdefault("delivery_info", {})["redelivered"] = lease.dequeue_count > 1
            lease.parts[tag] = (index, part)
            if not no_ack:
                self.keeper.hold(tag, lease)
        if no_ack:
            for tag in list(lease.parts):
                self._ack(lease, tag)
        return [(part, None) for _, part in open_parts]

    def ack(self, tag: str) -> bool:
        """Settle an acked message: deleted in the background (a bundle with its last part).
        False when this connection does not hold `tag`."""
        lease = self.keeper.take(tag)
        if lease is not None:
            self._ack(lease, tag)
        return lease is not None

    def _ack(self, lease: Lease, tag: str) -> None:
        if lease.bundle:
            self.keeper.run_later(lambda: self._close_part(lease, tag, None))
        else:
            self.keeper.settle_later(lease, self.delete_message)

    def requeue(self, tag: str) -> bool:
        """Make a held message visible again at once (a bundle's part is re-sent on its own).
        False when this connection does not hold `tag`."""
        lease = self.keeper.take(tag)
        if lease is None:
            return False
        if lease.bundle:
            self._close_part(lease, tag, lambda part: self.send_envelope(
                lease.queue, {"m": part, "rd": lease.dequeue_count}))
        else:
            self.keeper.settle(lease, self.release)
        return True

    def return_parts(self, lease: Lease, tags: list[str]) -> None:
        """Send back parts of a held bundle that were never delivered (the consumer had no room
        for them), together as one new Azure message, and settle them in the held bundle. This
        delivery does not count against their delivery limit: only the bundle's earlier ones do."""
        parts = [lease.parts[tag][1] for tag in tags if tag in lease.parts]
        if not parts:
            return
        envelope: dict[str, Any] = {"ms": parts} if len(parts) > 1 else {"m": parts[0]}
        if lease.dequeue_count > 1:
            envelope["rd"] = lease.dequeue_count - 1
        self.send_envelope(lease.queue, envelope)
        self._close_parts(lease, tags)

    def reject(self, tag: str, reason: str) -> bool:
        """Move a held message to the dead-letter queue (a bundle's part on its own). False when
        this connection does not hold `tag`."""
        lease = self.keeper.take(tag)
        if lease is None:
            return False
        if not lease.bundle:
            self.dead_letter(lease, lease.envelope, reason)
            return True
        logger.error("Moving a part of bundle %s of queue %r to its dead-letter queue: %s",
                     lease.message_id, lease.queue, reason)
        self.keeper.run_later(
            lambda: self._close_part(lease, tag, lambda part: self._send_dead(lease, {"m": part}, reason)))
        return True

    def _close_part(self, lease: Lease, tag: str, redirect: Callable[[dict[str, Any]], None] | None) -> None:
        """Settle one part of a bundle: redirect it (re-send, dead-letter) if asked, then note it
        settled in Redis, or delete the bundle when it was the last part held."""
        entry = lease.parts.get(tag)
        if entry is None:
            return
        if redirect is not None:
            redirect(entry[1])
        self._close_parts(lease, [tag])

    def _close_parts(self, lease: Lease, tags: list[str]) -> None:
        """Note parts of a bundle settled in Redis (one command for all), or delete the bundle
        when no part is held any more."""
        with lease.lock:  # noted before the lock is released, so never after the last part's clear
            indexes = [entry[0] for entry in (lease.parts.pop(tag, None) for tag in tags) if entry is not None]
            if not indexes:
                return
            last = not lease.parts
            done_parts = self._done_parts()
            if not last and done_parts is not None:
                done_parts.add(lease.queue, lease.message_id, *indexes)
        if last:
            self.keeper.settle(lease, self._delete_bundle)

    def _delete_bundle(self, lease: Lease) -> None:
        """Delete a bundle whose parts are all settled, and its record of settled parts."""
        self.delete_message(lease)
        done_parts = self._done_parts()
        if done_parts is not None:
            done_parts.clear(lease.queue, lease.message_id)

    def unpack(self, queue: str, envelope: dict[str, Any]) -> dict[str, Any]:
        """Return the Kombu payload of an envelope received from `queue` (fetching a blob,
        annotating dead letters)."""
        if "raw" in envelope:
            payload = _raw_payload(str(envelope["raw"]))
        elif "blob" in envelope:
            try:
                payload = wire.payload_from(self.blobs(queue).get(str(envelope["blob"])))
            except ResourceNotFoundError as exc:
                raise wire.PoisonMessage(f"stored body {envelope['blob']} is gone") from exc
        else:
            payload = envelope["m"]
        dead = envelope.get("dl")
        if isinstance(dead, dict):
            headers = payload.setdefault("headers", {}) or {}
            payload["headers"] = headers
            headers.update({f"x-dead-letter-{k}": v for k, v in dead.items()})
        return payload

    def delete_message(self, lease: Lease) -> None:
        """Delete an acked message, then its out-of-line body."""
        direct = self.direct(lease.queue)
        try:
            if direct is None or not direct.delete(lease.message_id, lease.pop_receipt):
                lease.client.delete_message(lease.message_id, lease.pop_receipt)
        except AzureError as exc:
            if not lost_hold(exc):
                raise
            logger.warning(
                "Ack of message %s on %r came too late: it will be redelivered",
                lease.message_id, lease.queue,
            )
            return
        if lease.blob:
            self.blobs(lease.queue).delete(lease.blob)

    def release(self, lease: Lease, after: float = 0.0) -> None:
        """Make a held message visible again (at once, or after `after` seconds), and signal it."""
        hidden = math.ceil(after)
        try:
            lease.client.update_message(lease.message_id, lease.pop_receipt, visibility_timeout=hidden)
        except AzureError as exc:
            if not lost_hold(exc):
                raise
            logger.warning("Message %s was already redelivered", lease.message_id)
            return
        signals = self._signals()
        if signals is not None:
            signals.notify(lease.queue, time.time() + hidden if hidden else None)

    def dead_letter(self, lease: Lease, envelope: dict[str, Any], reason: str) -> None:
        """Move a message to `<queue>-dlq` with the reason attached (in the background)."""
        logger.error(
            "Moving message %s of queue %r to its dead-letter queue: %s",
            lease.message_id, lease.queue, reason,
        )

        def move(held: Lease) -> None:
            self._send_dead(held, envelope, reason)
            held.blob = None
            self.delete_message(held)

        self.keeper.settle_later(lease, move)

    def _send_dead(self, lease: Lease, envelope: dict[str, Any], reason: str) -> None:
        """Send an envelope to `<queue>-dlq` with the reason and delivery count attached."""
        dlq = dead_letter_queue_name(lease.queue)
        dead = {k: v for k, v in envelope.items() if k not in ("due", "rd")}
        dead["dl"] = {"reason": reason, "queue": lease.queue, "delivery-count": lease.dequeue_count}
        self.declare(dlq, {}, False)
        self.send_envelope(dlq, dead)

    def hop(self, lease: Lease, envelope: dict[str, Any]) -> None:
        """Re-send a message due later than it can stay hidden, then delete the received copy."""
        now = time.time()
        due = float(envelope["due"])
        hidden = wire.initial_visibility(due, now)

        def move(held: Lease) -> None:
            self.send_envelope(held.queue, envelope, hidden)
            held.blob = None
            self.delete_message(held)

        self.keeper.settle_later(lease, move)


def _raw_payload(text: str) -> dict[str, Any]:
    """Wrap text that was not a Kombu message as one, so a dead-letter queue can be read."""
    return {
        "body": base64.b64encode(text.encode("utf-8")).decode("ascii"),
        "content-type": "text/plain",
        "content-encoding": "utf-8",
        "headers": {},
        "properties": {"body_encoding": "base64", "delivery_info": {}},
    }
