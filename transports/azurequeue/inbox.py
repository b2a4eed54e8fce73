"""Hand received messages from the I/O thread to the consuming thread, waking it either way.

The I/O thread receives; Kombu callbacks (and so Celery's) must run in the thread that drains
the connection. The inbox is a FIFO of `(queue, payload)` guarded by a condition: a blocking
`drain_events(timeout)` waits on the condition, and a worker's event loop (the kombu hub)
watches the read end of a socket pair that the inbox writes one byte to when it goes from
empty to non-empty. It also counts what it holds per owner (a channel), so the I/O thread
can subtract messages not yet delivered from the channel's prefetch room: a delivery counts
from `put` until the consuming thread says it was `delivered` (the channel counts it from
then on), so the room never looks larger than it is while deliveries are handed over.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Hashable
from typing import Any

Delivery = tuple[str, dict[str, Any], Hashable]
"""(Kombu queue, Kombu payload, owner): one message waiting to be delivered"""


class Inbox:
    """A thread-safe FIFO of deliveries with a pollable file descriptor."""

    def __init__(self) -> None:
        self._items: deque[Delivery] = deque()
        self._owned: Counter[Hashable] = Counter()
        self._cond = threading.Condition()
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._signalled = False

    def fileno(self) -> int:
        """The descriptor an event loop watches: readable while deliveries wait."""
        return self._reader.fileno()

    def put(self, queue: str, payload: dict[str, Any], owner: Hashable) -> None:
        """Add one delivery and wake whoever waits."""
        with self._cond:
            self._items.append((queue, payload, owner))
            self._owned[owner] += 1
            self._cond.notify_all()
            if not self._signalled:
                self._signalled = True
                with contextlib.suppress(OSError):
                    self._writer.send(b"\0")

    def take_all(self) -> list[Delivery]:
        """Remove and return every waiting delivery (the event loop's read callback); they still
        count as pending until `delivered`."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            if self._signalled:
                self._signalled = False
                with contextlib.suppress(OSError):
                    self._reader.recv(4096)
            return items

    def wait(self, timeout: float | None) -> list[Delivery]:
        """Wait up to `timeout` seconds (None: forever) for deliveries and take them all."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                self._cond.wait(remaining)
        return self.take_all()

    def delivered(self, items: list[Delivery]) -> None:
        """Stop counting deliveries taken: their channel has them (or they were given back)."""
        with self._cond:
            for _, _, owner in items:
                self._owned[owner] -= 1
                if self._owned[owner] <= 0:
                    del self._owned[owner]

    def pending(self, owner: Hashable) -> int:
        """How many deliveries of `owner` wait here or are being handed over."""
        with self._cond:
            return self._owned[owner]

    def close(self) -> None:
        """Close the socket pair (deliveries still waiting are the caller's to give back)."""
        self._reader.close()
        self._writer.close()
