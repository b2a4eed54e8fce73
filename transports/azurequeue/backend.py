"""Where a queue lives: the operations every queue backend offers (Azure queues, transient queues in Redis).

`Transport.backend(queue)` is the one place that picks the backend of a queue; the channel and
transport then call the same method whichever it is.
"""

from __future__ import annotations

from typing import Any, Protocol


class QueueBackend(Protocol):
    """Declare, route to, feed, measure and delete the queues of one kind of storage."""

    def declare(self, queue: str, arguments: dict[str, Any], auto_delete: bool) -> None:
        """Create the queue (or refresh it) from its AMQP arguments."""

    def bind(self, queue: str, exchange: str, kind: str, routing_key: str) -> None:
        """Record a binding where every process finds it."""

    def unbind(self, queue: str, exchange: str, kind: str, routing_key: str) -> None:
        """Remove a binding where every process finds it."""

    def put(self, queue: str, payload: dict[str, Any]) -> None:
        """Send a Kombu payload to the queue."""

    def get(self, queue: str) -> dict[str, Any] | None:
        """Take one deliverable message (`basic_get`), or None."""

    def size(self, queue: str) -> int:
        """Approximate message count."""

    def existing_size(self, queue: str) -> int | None:
        """Message count of a queue that exists; None when it does not."""

    def purge(self, queue: str) -> int:
        """Drop every message; return how many there were."""

    def delete(self, queue: str) -> None:
        """Delete the queue with its messages and bindings."""
