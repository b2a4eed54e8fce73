"""Bundles: several Kombu messages sent to one Azure queue as one Azure message.

Azure Queue Storage has no batch send or batch delete, so each message costs one send and one
delete however small it is. Inside `with bundled():` this thread's immediate sends (no
countdown or ETA) to an Azure queue are collected and, when the outermost block ends, sent as
bundles of up to `bundle_size` messages (envelope `{"ms": [...]}`, never larger than
`large_message_threshold`). Only with `redis_url`: elsewhere sends go out one by one at once.

Each part stays its own Kombu message, so its own Celery task: its own delivery tag, task id,
state, ack, reject and requeue. The consumer that receives a bundle holds all its parts (the
lease keeper renews the one Azure message while any part is held). Acking a part records its
index in a Redis set (`bundle:<queue>:<message id>`, one command; parts sent back together, one
for all) and the Azure message is
deleted with its last part; if the consumer dies first, the bundle reappears and only the parts
not in the set are delivered again. A part that is requeued or rejected goes out on its own
(re-sent, or to the dead-letter queue) and counts as settled in its bundle.

A consumer is handed no more parts than its prefetch room; the receiver keeps the rest for up
to 0.1 s, handing them over as room opens, then sends what is left back as one new Azure message
(`AzureQueues.return_parts`), so a fan-out spreads over every consumer with room. A queue's
message count counts a bundle once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

import redis

if TYPE_CHECKING:
    from .redisside import RedisKeys

#: Seconds a bundle's set of settled parts lives: longer than any message (7 days at most).
DONE_TTL_SECONDS = 8 * 24 * 3600
#: Add settled parts (ARGV[2..]) to a bundle's set and (re)start the set's expiry (ARGV[1]).
_ADD = "redis.call('SADD', KEYS[1], unpack(ARGV, 2)) redis.call('EXPIRE', KEYS[1], ARGV[1]) return 1"


class BundleSender(Protocol):
    """What sends the collected messages (the transport's `AzureQueues`)."""

    def send_bundle(self, queue: str, payloads: list[tuple[dict[str, Any], int | None]]) -> None: ...


class _Collecting(threading.local):
    """This thread's open `bundled()` blocks and the sends they collected."""

    depth = 0
    pending: dict[tuple[int, str], tuple[BundleSender, list[tuple[dict[str, Any], int | None]]]]

    def __init__(self) -> None:
        self.pending = {}


_collecting = _Collecting()


@contextmanager
def bundled() -> Iterator[None]:
    """Collect this thread's immediate sends to Azure queues; send them as bundles at the end.

    Nested blocks send when the outermost ends. The sends happen even when the block raises,
    so nothing published inside is lost; every queue's sends are tried, then the first failure
    raises from here.
    """
    _collecting.depth += 1
    try:
        yield
    finally:
        _collecting.depth -= 1
        if _collecting.depth == 0:
            pending, _collecting.pending = _collecting.pending, {}
            _send_all(pending)


def _send_all(pending: dict[tuple[int, str], tuple[BundleSender, list[tuple[dict[str, Any], int | None]]]]) -> None:
    """Send what a block collected, queue by queue; raise the first failure after trying all."""
    failure: Exception | None = None
    for (_, queue), (sender, payloads) in pending.items():
        try:
            sender.send_bundle(queue, payloads)
        except Exception as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


def collect(sender: BundleSender, queue: str, payload: dict[str, Any], ttl: int | None) -> bool:
    """Keep a send for the enclosing `bundled()` block; False when there is none (send now)."""
    if _collecting.depth == 0:
        return False
    _, payloads = _collecting.pending.setdefault((id(sender), queue), (sender, []))
    payloads.append((payload, ttl))
    return True


class DoneParts:
    """The settled parts of bundles, in Redis, so a redelivered bundle skips them."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._client = client
        self._keys = keys
        self._add = client.register_script(_ADD)

    def add(self, queue: str, message_id: str, *indexes: int) -> None:
        """Record parts `indexes` of a bundle as settled (one command)."""
        self._add(keys=[self._keys.bundle(queue, message_id)], args=[DONE_TTL_SECONDS, *indexes])

    def get(self, queue: str, message_id: str) -> set[int]:
        """The indexes of a bundle's settled parts."""
        return {int(value) for value in self._client.smembers(self._keys.bundle(queue, message_id))}

    def clear(self, queue: str, message_id: str) -> None:
        """Forget a bundle (its Azure message is deleted)."""
        self._client.delete(self._keys.bundle(queue, message_id))
