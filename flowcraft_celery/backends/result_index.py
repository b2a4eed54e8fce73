"""Which Celery result keys exist in Cosmos DB, known from Redis, so the backend never pays a
read of a missing item per stored result or per poll.

A point read of a missing item is a billed request on Cosmos DB (and on the emulator an HTTP 500
the SDK retries after 0.5 s), and Celery reads the current result before every store and on every
`AsyncResult.get` poll, mostly of results not stored yet. One small Redis key per result key says
what is known:

* `1`: the item exists (written just *before* the Cosmos write, so an absent mark never hides
  a written item);
* `0`: a read found no item (written with SET NX, so it never overwrites a `1`); it expires after
  `ABSENT_SECONDS`, so a `0` left behind by a writer that could not reach Redis costs one read a
  minute, never a lost result;
* no key: unknown (Redis lost it, or nobody asked yet): Cosmos is read once, the truth.

Redis unavailable: everything is unknown and the backend reads Cosmos as it would without this.
"""

from __future__ import annotations

import logging
import os
from enum import Enum
from typing import Any

import redis

from flowcraft_celery.stores.guard import log_level
from transports.azurequeue import redis_from_url

logger = logging.getLogger(__name__)

#: How long a "no such item" mark is trusted (seconds).
ABSENT_SECONDS = 60


class Known(Enum):
    """What Redis knows of one result key."""

    PRESENT = "1"
    ABSENT = "0"
    UNKNOWN = ""


class ResultIndex:
    """Existence marks of result keys under `<prefix>rx:<celery key>`."""

    def __init__(self, url: str, prefix: str, expires: float | None) -> None:
        self._url = url
        self._prefix = prefix
        self._expires = int(expires) if expires and expires > 0 else None
        self._client: tuple[int, redis.Redis] | None = None

    @property
    def client(self) -> redis.Redis:
        """This process's Redis client (a forked child builds its own)."""
        if self._client is None or self._client[0] != os.getpid():
            self._client = (os.getpid(), redis_from_url(
                self._url, socket_timeout=2.0, socket_connect_timeout=2.0, decode_responses=True))
        return self._client[1]

    def key(self, celery_key: Any) -> str:
        """The Redis key of one result key's mark."""
        text = celery_key.decode() if isinstance(celery_key, bytes) else str(celery_key)
        return f"{self._prefix}rx:{text}"

    def lookup(self, celery_key: Any) -> Known:
        """What is known of `celery_key` (UNKNOWN when Redis does not answer)."""
        try:
            value = self.client.get(self.key(celery_key))
        except redis.RedisError as exc:
            logger.debug("Result index unavailable, reading Cosmos: %r", exc)
            return Known.UNKNOWN
        if value == Known.PRESENT.value:
            return Known.PRESENT
        if value == Known.ABSENT.value:
            return Known.ABSENT
        return Known.UNKNOWN

    def present(self, celery_key: Any, ttl: float | None = None) -> None:
        """Mark `celery_key` as existing (call before writing the item)."""
        seconds = int(ttl) if ttl and ttl > 0 else self._expires
        try:
            self.client.set(self.key(celery_key), Known.PRESENT.value, ex=seconds)
        except redis.RedisError as exc:
            logger.log(log_level(exc, logging.WARNING), "Could not mark result %s as stored in Redis (readers find "
                       "it within %d s): %r", celery_key, ABSENT_SECONDS, exc)

    def absent(self, celery_key: Any) -> None:
        """Note that `celery_key` has no item (unless marked existing meanwhile)."""
        try:
            self.client.set(self.key(celery_key), Known.ABSENT.value, ex=ABSENT_SECONDS, nx=True)
        except redis.RedisError as exc:
            logger.debug("Could not note a missing result in Redis: %r", exc)

    def forget(self, celery_key: Any) -> None:
        """Drop the mark of a deleted key."""
        try:
            self.client.delete(self.key(celery_key))
        except redis.RedisError as exc:
            logger.debug("Could not drop a result mark in Redis: %r", exc)
