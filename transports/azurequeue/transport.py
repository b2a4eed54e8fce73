"""The channel and transport classes of ``azurequeue://``; the package docstring is the manual."""

from __future__ import annotations

import base64
import contextlib
import logging
import time
import uuid
from queue import Empty
from typing import Any

from amqp.protocol import queue_declare_ok_t  # type: ignore[import-untyped]
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.queue import QueueClient, QueueMessage
from kombu.exceptions import ChannelError
from kombu.transport import virtual

from . import wire
from .auth import Clients, build_clients, masked_url
from .blobs import LargeBodyStore
from .leases import Lease, LeaseKeeper
from .naming import DEAD_LETTER_SUFFIX, azure_queue_name, dead_letter_queue_name
from .options import Options
from .polling import PollSchedule
from .registry import BindingRegistry, Route

logger = logging.getLogger(__name__)

#: How long the consumer sleeps while prefetch is full or nothing is consumed.
IDLE_TICK = 0.05
#: Shortest gap between two registry refreshes forced by an unroutable direct publish.
MISS_REFRESH_SECONDS = 0.25


class Channel(virtual.Channel):
    """A Kombu channel whose queues, bindings and messages live in Azure Storage."""

    supports_fanout = True
    connection: Transport

    def __init__(self, connection: Transport, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self._noack_queues: set[str] = set()
        self._auto_delete_queues: set[str] = set()

    @property
    def transport(self) -> Transport:
        """The transport (one per Kombu connection) this channel belongs to."""
        return self.connection

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        """Create the Azure queue with its registry metadata (once per connection)."""
        if kwargs.get("auto_delete"):
            self._auto_delete_queues.add(queue)
        self.transport.declare_queue(
            queue, kwargs.get("arguments") or {}, bool(kwargs.get("auto_delete"))
        )

    def queue_declare(self, queue: str | None = None, passive: bool = False, **kwargs: Any) -> Any:
        """Declare a queue; a passive declare checks it exists and returns its message count."""
        name = queue or f"amq.gen-{uuid.uuid4()}"
        if not passive:
            self._new_queue(name, **kwargs)
            return queue_declare_ok_t(name, 0, 0)
        try:
            count = self.transport.queue_client(name).get_queue_properties()
        except ResourceNotFoundError as exc:
            raise ChannelError(
                f"NOT_FOUND - no queue {name!r}", (50, 10), "Channel.queue_declare", "404"
            ) from exc
        return queue_declare_ok_t(name, count.approximate_message_count, 0)

    def _size(self, queue: str) -> int:
        """Return the approximate number of messages, invisible ones included (after the acks
        already made here have reached the queue, so an acked message is not counted)."""
        self.transport.keeper.flush()
        props = self.transport.queue_client(queue).get_queue_properties()
        return props.approximate_message_count or 0

    def _purge(self, queue: str) -> int:
        """Delete every message of the queue and return how many there were."""
        count = self._size(queue)
        self.transport.queue_client(queue).clear_messages()
        return count

    def queue_delete(
        self, queue: str, if_unused: bool = False, if_empty: bool = False, **kwargs: Any
    ) -> None:
        """Delete the Azure queue, and with it its bindings, everywhere."""
        if if_empty and self._size(queue):
            return
        for exchange, routing_key, _ in list(self.state.queue_bindings(queue)):
            self._drop_local_route(queue, exchange, routing_key)
        self.state.queue_bindings_delete(queue)
        self._auto_delete_queues.discard(queue)
        self.transport.delete_queue(queue)

    def exchange_delete(self, exchange: str, if_unused: bool = False, nowait: bool = False) -> None:
        """Forget the exchange here; queues bound to it (maybe other processes') stay."""
        self.state.exchanges.pop(exchange, None)

    def _drop_local_route(self, queue: str, exchange: str, routing_key: str) -> None:
        """Remove one binding from this process's routing table of `exchange`."""
        table = self.state.exchanges.get(exchange, {}).get("table")
        if table is not None:
            table[:] = [row for row in table if not (row[0] == routing_key and row[2] == queue)]

    def _queue_bind(self, exchange: str, routing_key: str, pattern: Any, queue: str) -> None:
        """Publish a binding to the shared registry (the queue's metadata)."""
        kind = self.typeof(exchange).type or "direct"
        binding = (exchange, kind, routing_key)
        self.transport.registry.bind(queue, binding, lambda bindings: bindings.add(binding))

    def queue_unbind(
        self,
        queue: str,
        exchange: str | None = None,
        routing_key: str = "",
        arguments: Any = None,
        **kwargs: Any,
    ) -> None:
        """Remove a binding here and from the shared registry."""
        kind = self.typeof(exchange or "").type or "direct"
        super().queue_unbind(queue, exchange, routing_key, arguments, **kwargs)
        binding = (exchange or "", kind, routing_key)
        self.transport.registry.bind(queue, binding, lambda bindings: bindings.discard(binding))

    def get_table(self, exchange: str) -> list[Route]:
        """Return the routing table of `exchange`: this process's bindings and everyone else's."""
        local: list[Route] = list(self.state.exchanges.get(exchange, {}).get("table", []))
        remote = self.transport.registry.routes(exchange)
        return local + [row for row in remote if row not in local]

    def typeof(self, exchange: str, default: str = "direct") -> Any:
        """Return the exchange type object, asking the shared registry for unknown exchanges."""
        if exchange not in self.state.exchanges:
            kind = self.transport.registry.exchange_type(exchange)
            if kind in self.exchange_types:
                return self.exchange_types[kind]
        return super().typeof(exchange, default)

    def _lookup(self, exchange: str, routing_key: str, default: str | None = None) -> list[str]:
        """Find the queues for a publish; an unroutable direct publish re-reads the registry."""
        queues = list(super()._lookup(exchange, routing_key, default))
        registry = self.transport.registry
        if not queues and exchange and self.typeof(exchange).type == "direct":
            if registry.age() > MISS_REFRESH_SECONDS:
                registry.refresh()
                queues = list(super()._lookup(exchange, routing_key, default))
            if not queues:
                logger.warning(
                    "Message to direct exchange %r with routing key %r matched no queue",
                    exchange, routing_key,
                )
        return queues

    def _put_fanout(self, exchange: str, message: dict[str, Any], routing_key: str,
                    **kwargs: Any) -> None:
        """Send a copy of the message to every queue bound to the fanout exchange."""
        for queue in sorted({row[2] for row in self.get_table(exchange)}):
            self._put(queue, message, **kwargs)

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        """Send a message to a queue."""
        self.transport.send(queue, message)

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        """Start consuming; the queue is polled at once."""
        if no_ack:
            self._noack_queues.add(queue)
        self.transport.schedule.wake(queue, time.monotonic())
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def basic_cancel(self, consumer_tag: str) -> Any:
        """Stop consuming; an auto-delete queue is deleted with its last consumer."""
        queue = self._tag_to_queue.get(consumer_tag)
        result = super().basic_cancel(consumer_tag)
        if queue is not None and queue not in self._active_queues:
            self._noack_queues.discard(queue)
            self.transport.schedule.forget(queue)
            if queue in self._auto_delete_queues:
                self.queue_delete(queue)
        return result

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        """Receive one message synchronously; with `no_ack` it is deleted at once."""
        try:
            message = self.Message(self._get(queue), channel=self)
        except Empty:
            return None
        if no_ack:
            lease = self.transport.keeper.take(message.delivery_tag)
            if lease is not None:
                self.transport.keeper.settle_later(lease, self.transport.delete_message)
        else:
            self.qos.append(message, message.delivery_tag)
        return message

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        """Receive one message for `basic_get` (poison messages are dead-lettered and skipped)."""
        while True:
            received = self.transport.receive(queue, 1)
            if not received:
                raise Empty()
            payload = self.accept(queue, received[0])
            if payload is not None:
                return payload

    def batch_size(self) -> int:
        """How many messages one receive may take: prefetch room, capped by the option."""
        room = self.qos.can_consume_max_estimate()
        cap = self.transport.options.max_messages_per_poll
        return cap if room is None else max(1, min(room, cap))

    def accept(self, queue: str, received: QueueMessage) -> dict[str, Any] | None:
        """Turn a received message into a Kombu payload and hold it, or dead-letter/hop it."""
        transport = self.transport
        lease = Lease(
            queue=queue,
            client=transport.queue_client(queue),
            message_id=received.id,
            pop_receipt=received.pop_receipt or "",
            dequeue_count=received.dequeue_count or 1,
        )
        text = str(received.content)
        try:
            envelope = wire.decode(text)
            lease.blob = envelope.get("blob")
            lease.envelope = envelope
            payload = transport.unpack(envelope)
        except wire.PoisonMessage as exc:
            transport.dead_letter(lease, {"raw": text}, f"undecodable body: {exc}")
            return None
        limit = transport.options.max_delivery_count
        if lease.dequeue_count > limit and not queue.endswith(DEAD_LETTER_SUFFIX):
            transport.dead_letter(
                lease, envelope, f"delivered {lease.dequeue_count} times (limit {limit})"
            )
            return None
        due = envelope.get("due")
        if due is not None and float(due) > time.time() + 1:
            transport.hop(lease, envelope)
            return None
        tag = uuid.uuid4().hex
        props = payload["properties"]
        props["delivery_tag"] = tag
        props.setdefault("delivery_info", {})["redelivered"] = lease.dequeue_count > 1
        if queue in self._noack_queues:
            transport.keeper.settle_later(lease, transport.delete_message)
        else:
            transport.keeper.hold(tag, lease)
        return payload

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        """Acknowledge: delete the message (in the background) and free its prefetch slot."""
        lease = self.transport.keeper.take(delivery_tag)
        if lease is not None:
            self.transport.keeper.settle_later(lease, self.transport.delete_message)
        super().basic_ack(delivery_tag)

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """Reject: make the message visible again at once, or move it to the dead-letter queue."""
        lease = self.transport.keeper.take(delivery_tag)
        if lease is not None:
            if requeue:
                self.transport.keeper.settle(lease, self.transport.release)
            else:
                self.transport.dead_letter(lease, lease.envelope, "rejected by the consumer")
        self.qos.reject(delivery_tag, requeue=False)

    def _restore(self, message: Any) -> None:
        """Give an unacked message back to the queue: visible again at once."""
        lease = self.transport.keeper.take(message.delivery_tag)
        if lease is None:
            super()._restore(message)
            return
        self.transport.keeper.settle(lease, self.transport.release)


AzureQueueChannel = Channel


class Transport(virtual.Transport):
    """Azure Queue Storage transport: polls consumed queues, sends, settles and routes."""

    Channel = Channel

    can_parse_url = True
    default_port = None
    driver_type = "azurequeue"
    driver_name = "azure-storage-queue"
    connection_errors: tuple[Any, ...] = (
        *virtual.Transport.connection_errors,
        ServiceRequestError,
        ServiceResponseError,
    )
    channel_errors: tuple[Any, ...] = (*virtual.Transport.channel_errors, AzureError)

    implements = virtual.Transport.implements.extend(
        asynchronous=False,
        exchange_type=frozenset(["direct", "topic", "fanout"]),
        heartbeats=False,
    )

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.options = Options.from_transport_options(dict(client.transport_options or {}))
        self.schedule = PollSchedule(self.options.polling_interval,
                                     self.options.max_polling_interval)
        self.keeper = LeaseKeeper(self.options.visibility_timeout, self.options.settle_threads)
        self._clients: Clients | None = None
        self._registry: BindingRegistry | None = None
        self._blobs: LargeBodyStore | None = None
        self._queue_clients: dict[str, QueueClient] = {}
        self._declared: set[str] = set()
        self._last_heartbeat = time.monotonic()

    @classmethod
    def as_uri(cls, uri: str, include_password: bool = False, mask: str = "**") -> str:
        """Return the broker URL with its credential masked."""
        return masked_url(uri, include_password, mask)

    def driver_version(self) -> str:
        """Return the version of azure-storage-queue."""
        from azure.storage.queue import __version__

        return str(__version__)

    @property
    def clients(self) -> Clients:
        """The Azure service clients, built on first use."""
        if self._clients is None:
            conninfo: Any = self.client
            self._clients = build_clients(conninfo.hostname or "", conninfo.transport_options)
        return self._clients

    @property
    def registry(self) -> BindingRegistry:
        """The shared binding registry."""
        if self._registry is None:
            self._registry = BindingRegistry(
                self.clients.queues,
                self.queue_client,
                self.options.queue_name_prefix,
                self.options.binding_cache_seconds,
                self.options.stale_after,
            )
        return self._registry

    @property
    def blobs(self) -> LargeBodyStore:
        """Where large bodies go."""
        if self._blobs is None:
            self._blobs = LargeBodyStore(self.clients.blobs, self.options.blob_container)
        return self._blobs

    def azure_name(self, queue: str) -> str:
        """Return the Azure queue name of a Kombu queue."""
        return azure_queue_name(queue, self.options.queue_name_prefix)

    def queue_client(self, queue: str) -> QueueClient:
        """Return the (cached) client of a Kombu queue's Azure queue."""
        client = self._queue_clients.get(queue)
        if client is None:
            client = self.clients.queues.get_queue_client(self.azure_name(queue))
            self._queue_clients[queue] = client
        return client

    def establish_connection(self) -> Any:
        """Build the clients (no request is made until the first queue operation)."""
        self._clients = self.clients
        return super().establish_connection()

    def close_connection(self, connection: Any) -> None:
        """Close channels (giving unacked messages back), then finish settlements in flight."""
        super().close_connection(connection)
        self.keeper.close()

    def declare_queue(self, queue: str, arguments: dict[str, Any], auto_delete: bool) -> None:
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

    def delete_queue(self, queue: str) -> None:
        """Delete the Azure queue once settlements in flight are done; a queue already gone is fine."""
        self.keeper.flush()
        self._declared.discard(queue)
        self.registry.forget(queue)
        with contextlib.suppress(ResourceNotFoundError):
            self.queue_client(queue).delete_queue()
        self._queue_clients.pop(queue, None)

    def send(self, queue: str, payload: dict[str, Any]) -> None:
        """Send a Kombu payload: delayed until its ETA, with its TTL, large bodies to a blob."""
        now = time.time()
        due = wire.due_time(payload)
        hidden = wire.initial_visibility(due, now)
        ttl = wire.time_to_live(payload, self.registry.message_ttl_ms(queue), hidden)
        envelope: dict[str, Any] = {"m": payload}
        if due is not None and due - now > wire.MAX_VISIBILITY_SECONDS:
            envelope["due"] = due
        self.send_envelope(queue, envelope, hidden, ttl)

    def send_envelope(
        self, queue: str, envelope: dict[str, Any], hidden: int = 0, ttl: int | None = None
    ) -> None:
        """Send an envelope, moving a too-large payload to Blob Storage first."""
        text = wire.encode(envelope)
        if len(text) > self.options.large_message_threshold and "m" in envelope:
            reference = self.blobs.put(self.azure_name(queue), wire.encode(envelope["m"]))
            slim = {k: v for k, v in envelope.items() if k != "m"}
            text = wire.encode({**slim, "blob": reference})
        client = self.queue_client(queue)
        try:
            client.send_message(text, visibility_timeout=hidden or None, time_to_live=ttl)
        except ResourceNotFoundError:
            self._create(queue)
            client.send_message(text, visibility_timeout=hidden or None, time_to_live=ttl)
        if hidden == 0 and queue in self._callbacks:
            self.schedule.wake(queue, time.monotonic())

    def unpack(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """Return the Kombu payload of an envelope (fetching a blob, annotating dead letters)."""
        if "raw" in envelope:
            payload = _raw_payload(str(envelope["raw"]))
        elif "blob" in envelope:
            try:
                payload = wire.payload_from(self.blobs.get(str(envelope["blob"])))
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

    def receive(self, queue: str, count: int) -> list[QueueMessage]:
        """Receive up to `count` messages, hiding them for the visibility timeout."""
        client = self.queue_client(queue)
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

    def delete_message(self, lease: Lease) -> None:
        """Delete an acked message, then its out-of-line body."""
        try:
            lease.client.delete_message(lease.message_id, lease.pop_receipt)
        except ResourceNotFoundError:
            logger.warning(
                "Ack of message %s on %r came too late: it will be redelivered",
                lease.message_id, lease.queue,
            )
            return
        if lease.blob:
            self.blobs.delete(lease.blob)

    def release(self, lease: Lease) -> None:
        """Make a held message visible again at once."""
        try:
            lease.client.update_message(lease.message_id, lease.pop_receipt, visibility_timeout=0)
        except ResourceNotFoundError:
            logger.warning("Message %s was already redelivered", lease.message_id)

    def dead_letter(self, lease: Lease, envelope: dict[str, Any], reason: str) -> None:
        """Move a message to `<queue>-dlq` with the reason attached (in the background)."""
        logger.error(
            "Moving message %s of queue %r to its dead-letter queue: %s",
            lease.message_id, lease.queue, reason,
        )
        dlq = dead_letter_queue_name(lease.queue)
        info = {"reason": reason, "queue": lease.queue, "delivery-count": lease.dequeue_count}
        dead = {k: v for k, v in envelope.items() if k != "due"}
        dead["dl"] = info

        def move(held: Lease) -> None:
            self.declare_queue(dlq, {}, False)
            self.send_envelope(dlq, dead)
            held.blob = None
            self.delete_message(held)

        self.keeper.settle_later(lease, move)

    def hop(self, lease: Lease, envelope: dict[str, Any]) -> None:
        """Re-send a message due later than Azure's 7-day visibility limit, then delete it."""
        now = time.time()
        due = float(envelope["due"])
        hidden = wire.initial_visibility(due, now)
        if due - now <= wire.MAX_VISIBILITY_SECONDS:
            envelope = {k: v for k, v in envelope.items() if k != "due"}

        def move(held: Lease) -> None:
            self.send_envelope(held.queue, envelope, hidden)
            held.blob = None
            self.delete_message(held)

        self.keeper.settle_later(lease, move)

    def _consumable(self) -> dict[str, AzureQueueChannel]:
        """Map each queue that may be polled now to the channel consuming it."""
        queues: dict[str, AzureQueueChannel] = {}
        for channel in self.channels:
            if channel._consumers and channel.qos.can_consume():
                for queue in channel._active_queues:
                    queues.setdefault(queue, channel)
        return queues

    def _maybe_heartbeat(self, now: float) -> None:
        """Keep this process's transient queues alive and reap abandoned ones, now and then."""
        if now - self._last_heartbeat < self.options.queue_heartbeat_interval:
            return
        self._last_heartbeat = now
        consumed = {q for channel in self.channels for q in channel._active_queues}
        self.registry.heartbeat(consumed)
        self.registry.refresh()

    def drain_events(self, connection: Any, timeout: float | None = None, **kwargs: Any) -> None:
        """Deliver the next batch from the queue due first; sleep when nothing is due."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            now = time.monotonic()
            self._maybe_heartbeat(now)
            queues = self._consumable()
            queue = self.schedule.due(list(queues), now) if queues else None
            if queue is not None:
                if self._poll(queue, queues[queue]):
                    return
                continue
            wake = self.schedule.next_time(list(queues)) if queues else now + IDLE_TICK
            if deadline is not None:
                if now >= deadline:
                    raise TimeoutError()
                wake = min(wake, deadline)
            time.sleep(max(0.0, wake - now))

    def _poll(self, queue: str, channel: AzureQueueChannel) -> bool:
        """Receive one batch from `queue` and deliver it; tell whether anything was delivered."""
        wanted = channel.batch_size()
        received = self.receive(queue, wanted)
        now = time.monotonic()
        if not received:
            self.schedule.was_empty(queue, now)
            return False
        self.schedule.got_messages(queue, now, full=len(received) >= wanted)
        # Hold (and so renew) every message of the batch before delivering any: delivering can
        # block (a full prefork pool), and a message not yet held would reappear meanwhile.
        payloads = [p for p in (channel.accept(queue, m) for m in received) if p is not None]
        for payload in payloads:
            self._deliver(payload, queue)
        return bool(payloads)


def _raw_payload(text: str) -> dict[str, Any]:
    """Wrap text that was not a Kombu message as one, so a dead-letter queue can be read."""
    return {
        "body": base64.b64encode(text.encode("utf-8")).decode("ascii"),
        "content-type": "text/plain",
        "content-encoding": "utf-8",
        "headers": {},
        "properties": {"body_encoding": "base64", "delivery_info": {}},
    }
