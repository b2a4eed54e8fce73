"""The Kombu channel of `azurequeue://`: declarations, routing, publishing, consuming and settling."""

from __future__ import annotations

import logging
import uuid
from queue import Empty
from typing import TYPE_CHECKING, Any

from amqp.protocol import queue_declare_ok_t  # type: ignore[import-untyped]
from kombu.exceptions import ChannelError
from kombu.transport import virtual
from kombu.transport.base import to_rabbitmq_queue_arguments

from .registry import Route

if TYPE_CHECKING:
    from .transport import Transport

logger = logging.getLogger(__name__)

#: Shortest gap between two registry re-reads forced by an unroutable direct publish.
MISS_REFRESH_SECONDS = 0.25


class Channel(virtual.Channel):
    """A Kombu channel whose queues live in Azure Storage (transient ones in Redis, if set)."""

    supports_fanout = True
    connection: Transport

    def __init__(self, connection: Transport, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self._auto_delete_queues: set[str] = set()

    @property
    def transport(self) -> Transport:
        """The transport (one per Kombu connection) this channel belongs to."""
        return self.connection

    def prepare_queue_arguments(self, arguments: Any, **kwargs: Any) -> Any:
        """Turn a Kombu queue's `message_ttl` into `x-message-ttl` (as py-amqp does), so
        `Queue(message_ttl=...)` takes effect. `expires` is left out on purpose: an auto-delete
        queue (Celery's reply and pidbox queues) goes with its last consumer, as it always has."""
        return to_rabbitmq_queue_arguments(arguments, message_ttl=kwargs.get("message_ttl"))

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        """Create the queue (once per connection). An auto-delete queue without `x-expires`
        goes with its last consumer; an expiring one (Celery's reply queue) lives as long as
        this connection, so a client reusing it between calls never loses a reply."""
        arguments = kwargs.get("arguments") or {}
        auto_delete = bool(kwargs.get("auto_delete"))
        if auto_delete and arguments.get("x-expires") is None:
            self._auto_delete_queues.add(queue)
        self.transport.declare_queue(queue, arguments, auto_delete)

    def queue_declare(self, queue: str | None = None, passive: bool = False, **kwargs: Any) -> Any:
        """Declare a queue; a passive declare checks it exists and returns its message count."""
        name = queue or f"amq.gen-{uuid.uuid4()}"
        if not passive:
            self._new_queue(name, **kwargs)
            return queue_declare_ok_t(name, 0, 0)
        count = self.transport.existing_queue_size(name)
        if count is None:
            raise ChannelError(f"NOT_FOUND - no queue {name!r}", (50, 10), "Channel.queue_declare", "404")
        return queue_declare_ok_t(name, count, 0)

    def _size(self, queue: str) -> int:
        """Return the approximate number of messages, invisible ones included (after the acks
        already made here have reached the queue, so an acked message is not counted)."""
        return self.transport.backend(queue).size(queue)

    def _purge(self, queue: str) -> int:
        """Delete every message of the queue and return how many there were."""
        return self.transport.backend(queue).purge(queue)

    def queue_delete(
        self, queue: str, if_unused: bool = False, if_empty: bool = False, **kwargs: Any
    ) -> None:
        """Delete the queue, and with it its bindings, everywhere."""
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
        """Publish a binding where every process finds it."""
        kind = self.typeof(exchange).type or "direct"
        self.transport.backend(queue).bind(queue, exchange, kind, routing_key)

    def queue_unbind(
        self,
        queue: str,
        exchange: str | None = None,
        routing_key: str = "",
        arguments: Any = None,
        **kwargs: Any,
    ) -> None:
        """Remove a binding here and where every process finds it."""
        kind = self.typeof(exchange or "").type or "direct"
        super().queue_unbind(queue, exchange, routing_key, arguments, **kwargs)
        self.transport.backend(queue).unbind(queue, exchange or "", kind, routing_key)

    def get_table(self, exchange: str) -> list[Route]:
        """Return the routing table of `exchange`: this process's bindings and everyone else's."""
        local: list[Route] = list(self.state.exchanges.get(exchange, {}).get("table", []))
        remote = self.transport.routes(exchange)
        return local + [row for row in remote if row not in local]

    def typeof(self, exchange: str, default: str = "direct") -> Any:
        """Return the exchange type object, asking the shared registry for unknown exchanges."""
        if exchange not in self.state.exchanges:
            kind = self.transport.exchange_type(exchange)
            if kind in self.exchange_types:
                return self.exchange_types[kind]
        return super().typeof(exchange, default)

    def _lookup(self, exchange: str, routing_key: str, default: str | None = None) -> list[str]:
        """Find the queues for a publish; an unroutable direct publish re-reads the bindings."""
        queues = list(super()._lookup(exchange, routing_key, default))
        if not queues and exchange and self.typeof(exchange).type == "direct":
            self.transport.recheck_bindings(MISS_REFRESH_SECONDS)
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
        self.transport.put(queue, message)

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        """Start consuming; the I/O thread polls the queue at once."""
        result = super().basic_consume(queue, no_ack, *args, **kwargs)
        self.transport.consume(queue, self, no_ack)
        return result

    def basic_cancel(self, consumer_tag: str) -> Any:
        """Stop consuming; an auto-delete queue is deleted with its last consumer."""
        queue = self._tag_to_queue.get(consumer_tag)
        result = super().basic_cancel(consumer_tag)
        if queue is not None and queue not in self._active_queues:
            self.transport.cancel(queue)
            if queue in self._auto_delete_queues:
                self.queue_delete(queue)
        return result

    def after_reply_message_received(self, queue: str) -> None:
        """Keep the reply queue: the client reuses it for its next call (deleted with the connection)."""

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        """Receive one message synchronously; with `no_ack` it is deleted at once."""
        try:
            message = self.Message(self._get(queue), channel=self)
        except Empty:
            return None
        if no_ack:
            self.transport.ack(message.delivery_tag)
        else:
            self.qos.append(message, message.delivery_tag)
        return message

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        """Receive one message for `basic_get` from wherever the queue lives."""
        payload = self.transport.backend(queue).get(queue)
        if payload is None:
            raise Empty()
        return payload

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        """Acknowledge: delete the message (in the background) and free its prefetch slot."""
        self.transport.ack(delivery_tag)
        super().basic_ack(delivery_tag)
        self.transport.room_opened(self)

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """Reject: make the message visible again at once, or move it to the dead-letter queue."""
        if requeue:
            self.transport.requeue(delivery_tag)
        else:
            self.transport.reject(delivery_tag, "rejected by the consumer")
        self.qos.reject(delivery_tag, requeue=False)
        self.transport.room_opened(self)

    def _restore(self, message: Any) -> None:
        """Give an unacked message back to the queue: visible again at once."""
        if not self.transport.requeue(message.delivery_tag):
            super()._restore(message)
