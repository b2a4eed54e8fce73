"""Transient queues (auto-delete or expiring) kept in Redis: Celery's control, reply and event queues.

Celery's remote control (`<host>.celery.pidbox`, `<id>.reply.celery.pidbox`) and event
(`celeryev.<id>`) queues are auto-delete or expiring. On Azure they cost a queue creation, a
metadata write per binding, polling, and a queue that outlives a killed process; Azure also
refuses to re-create a queue for a while after deleting it. With Redis configured they live in
Redis instead (keys under the transport's namespace, `redisside.RedisKeys`):

* `alive:<queue>`: the queue exists while this key does; its declaring process refreshes it
  (`keepalive`), so it disappears `ttl` seconds after that process dies, list and all. Its value
  is `1`, or `m<ms>` for a queue declared with `x-message-ttl`.
* `q:<queue>`: the messages, a list (pushed right, popped left by the consumer's BLPOP). A
  message with a time to live (its `expiration`, the queue's `x-message-ttl`, the shorter) is
  stored as `<epoch ms it expires>:<json>`; one popped after that time is dropped, not delivered.
* `bind:<exchange>`: a sorted set of bindings `[exchange type, routing key, queue]` scored by
  the time they expire, refreshed with the queue; publishers read the live ones.

A message is pushed only while its queue is alive (one script), so a publisher never re-creates
a queue its consumer deleted. Messages of transient queues are delivered at most once (no
lease): they are control requests, replies and events, which Celery sends without acks.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

if TYPE_CHECKING:
    from .redisside import RedisKeys

logger = logging.getLogger(__name__)

#: Seconds an expiring queue without `x-expires` lives after its process stops refreshing it.
DEFAULT_TTL = 30.0
#: The shortest lifetime given to a transient queue, whatever its `x-expires`.
MIN_TTL = 6.0

#: Drop the expired bindings of an exchange and return the live ones (one command per lookup).
_ROUTES = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[1])
return redis.call('zrangebyscore', KEYS[1], ARGV[1], '+inf')
"""

#: Refresh queues' lifetimes in one command: ARGV[1] queues, then per queue its ttl (ms), alive
#: value, binding count and bindings' expiry (epoch ms), then its binding members; KEYS per queue:
#: its alive and messages keys, then its bindings' exchange keys.
_KEEPALIVE = """
local k, a = 1, 2
for _ = 1, tonumber(ARGV[1]) do
  local ttl, mark, bindings, expiry = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3]
  a = a + 4
  redis.call('set', KEYS[k], mark, 'px', ttl)
  redis.call('pexpire', KEYS[k + 1], ttl)
  k = k + 2
  for _ = 1, bindings do
    redis.call('zadd', KEYS[k], expiry, ARGV[a])
    k = k + 1
    a = a + 1
  end
end
return 1
"""

_PUT = """
local ttl = redis.call('pttl', KEYS[1])
if ttl <= 0 then return 0 end
local item = ARGV[1]
local expires = tonumber(ARGV[3])
local queue_ttl = tonumber(string.match(redis.call('get', KEYS[1]) or '', '^m(%d+)$') or '')
if queue_ttl then
  local by_queue = tonumber(ARGV[4]) + queue_ttl
  if expires == 0 or by_queue < expires then expires = by_queue end
end
if expires > 0 then item = string.format('%d', expires) .. ':' .. item end
redis.call('rpush', KEYS[2], item)
redis.call('ltrim', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('pexpire', KEYS[2], ttl)
return 1
"""

Binding = tuple[str, str, str]
"""(exchange type, routing key, queue)"""


def is_transient(arguments: dict[str, Any], auto_delete: bool) -> bool:
    """Tell whether a queue declared with these arguments is transient (lives in Redis)."""
    return auto_delete or arguments.get("x-expires") is not None


def message_ttl_ms(arguments: dict[str, Any]) -> int | None:
    """The queue's `x-message-ttl` (milliseconds), if any."""
    value = arguments.get("x-message-ttl")
    return None if value is None else max(0, int(value))


def lifetime(arguments: dict[str, Any]) -> float:
    """Seconds a transient queue lives after its process stops refreshing it."""
    expires_ms = arguments.get("x-expires")
    return max(MIN_TTL, float(expires_ms) / 1000.0) if expires_ms else DEFAULT_TTL


class TransientQueues:
    """Transient queues of one namespace in Redis: the Redis `QueueBackend` of the transport."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, max_length: int) -> None:
        self._client = client
        self.keys = keys
        self._max_length = max_length
        self._put: Callable[..., Any] = client.register_script(_PUT)
        self._routes: Callable[..., Any] = client.register_script(_ROUTES)
        self._keepalive: Callable[..., Any] = client.register_script(_KEEPALIVE)
        self._lock = threading.Lock()
        self._owned: dict[str, float] = {}
        self._marks: dict[str, str] = {}
        self._bindings: dict[str, set[tuple[str, str, str]]] = {}

    def declare(self, queue: str, arguments: dict[str, Any], auto_delete: bool = True) -> None:
        """Create (or refresh) `queue` with the lifetime and message TTL its arguments give; this
        process keeps it alive until `delete` or exit."""
        ttl, message_ttl = lifetime(arguments), message_ttl_ms(arguments)
        mark = "1" if message_ttl is None else f"m{message_ttl}"
        with self._lock:
            self._owned[queue] = ttl
            self._marks[queue] = mark
            self._bindings.setdefault(queue, set())
        self._client.set(self.keys.alive(queue), mark, px=int(ttl * 1000))

    def exists(self, queue: str) -> bool:
        """Tell whether `queue` is alive (declared by a process still refreshing it)."""
        return bool(self._client.exists(self.keys.alive(queue)))

    def existing_size(self, queue: str) -> int | None:
        """How many messages wait in `queue`; None when it is not alive."""
        return self.size(queue) if self.exists(queue) else None

    def bind(self, queue: str, exchange: str, kind: str, routing_key: str) -> None:
        """Bind `queue` to `exchange`; the binding lives as long as the queue."""
        with self._lock:
            ttl = self._owned.get(queue, DEFAULT_TTL)
            self._bindings.setdefault(queue, set()).add((exchange, kind, routing_key))
        member = json.dumps([kind, routing_key, queue])
        self._client.zadd(self.keys.bindings(exchange), {member: _expiry_ms(ttl)})

    def unbind(self, queue: str, exchange: str, kind: str, routing_key: str) -> None:
        """Remove one binding of `queue`."""
        with self._lock:
            self._bindings.get(queue, set()).discard((exchange, kind, routing_key))
        self._client.zrem(self.keys.bindings(exchange), json.dumps([kind, routing_key, queue]))

    def delete(self, queue: str) -> None:
        """Delete `queue`, its messages and the bindings this process made for it."""
        with self._lock:
            self._owned.pop(queue, None)
            self._marks.pop(queue, None)
            bindings = self._bindings.pop(queue, set())
        pipe = self._client.pipeline(transaction=False)
        pipe.delete(self.keys.alive(queue), self.keys.messages(queue))
        for exchange, kind, key in bindings:
            pipe.zrem(self.keys.bindings(exchange), json.dumps([kind, key, queue]))
        pipe.execute()

    def delete_owned(self) -> None:
        """Delete every queue this process declared (its connection closes)."""
        with self._lock:
            queues = list(self._owned)
        for queue in queues:
            self.delete(queue)

    def keepalive(self) -> None:
        """Refresh the lifetime of every queue (and binding) this process declared (one command)."""
        with self._lock:
            owned = dict(self._owned)
            marks = dict(self._marks)
            bindings = {q: set(b) for q, b in self._bindings.items() if q in owned}
        if not owned:
            return
        keys: list[str] = []
        args: list[Any] = [len(owned)]
        for queue, ttl in owned.items():
            bound = sorted(bindings.get(queue, ()))
            keys += [self.keys.alive(queue), self.keys.messages(queue), *(self.keys.bindings(e) for e, _, _ in bound)]
            args += [int(ttl * 1000), marks.get(queue, "1"), len(bound), _expiry_ms(ttl),
                     *(json.dumps([kind, key, queue]) for _, kind, key in bound)]
        self._keepalive(keys=keys, args=args)

    def min_ttl(self) -> float | None:
        """The shortest lifetime among this process's queues (None if it declared none)."""
        with self._lock:
            return min(self._owned.values()) if self._owned else None

    def routes(self, exchange: str) -> list[Binding]:
        """The live bindings of `exchange` in every process; expired ones are removed."""
        members = self._routes(keys=[self.keys.bindings(exchange)], args=[int(time.time() * 1000)])
        routes: list[Binding] = []
        for member in members:
            kind, key, queue = json.loads(member)
            routes.append((str(kind), str(key), str(queue)))
        return routes

    def put(self, queue: str, payload: dict[str, Any]) -> None:
        """Push a message onto `queue` if it is alive (else drop it: its consumer is gone). It
        expires after the shorter of its `expiration` and the queue's `x-message-ttl`."""
        keys = [self.keys.alive(queue), self.keys.messages(queue)]
        now_ms = int(time.time() * 1000)
        expiration = (payload.get("properties") or {}).get("expiration")
        expires = now_ms + max(0, int(float(expiration))) if expiration is not None else 0
        if not self._put(keys=keys, args=[json.dumps(payload), self._max_length, expires, now_ms]):
            logger.debug("Dropped a message for transient queue %r: it is gone", queue)

    def get(self, queue: str) -> dict[str, Any] | None:
        """Take one message of `queue`, if any (`basic_get`); expired ones are dropped."""
        while True:
            text = self._client.lpop(self.keys.messages(queue))
            if text is None:
                return None
            payload = decode(str(text))
            if payload is not None:
                return payload

    def size(self, queue: str) -> int:
        """How many messages wait in `queue`."""
        return int(self._client.llen(self.keys.messages(queue)))

    def purge(self, queue: str) -> int:
        """Drop every message of `queue`; return how many there were."""
        pipe = self._client.pipeline(transaction=True)
        pipe.llen(self.keys.messages(queue))
        pipe.delete(self.keys.messages(queue))
        return int(pipe.execute()[0])

    def names(self) -> list[str]:
        """Every transient queue alive in this namespace (any process's)."""
        keys = self._client.scan_iter(self.keys.alive_pattern, count=500)
        return sorted(self.keys.queue_of_alive(str(key)) for key in keys)


def _expiry_ms(ttl: float) -> int:
    """Epoch milliseconds `ttl` seconds from now."""
    return int((time.time() + ttl) * 1000)


def decode(text: str | bytes) -> dict[str, Any] | None:
    """Parse a message popped from a transient queue; None if it expired before it was popped."""
    if isinstance(text, bytes):
        text = text.decode()
    if not text.startswith("{"):
        expires, _, text = text.partition(":")
        if time.time() * 1000 >= int(expires):
            return None
    payload = json.loads(text)
    if not isinstance(payload, dict):
        raise ValueError("transient queue message is not a Kombu payload")
    return payload
