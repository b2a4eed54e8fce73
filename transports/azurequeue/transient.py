"""Transient queues (auto-delete or expiring) kept in Redis: Celery's control, reply and event queues.

Celery's remote control (`<host>.celery.pidbox`, `<id>.reply.celery.pidbox`) and event
(`celeryev.<id>`) queues are auto-delete or expiring. On Azure they cost a queue creation, a
metadata write per binding, polling, and a queue that outlives a killed process; Azure also
refuses to re-create a queue for a while after deleting it. With Redis configured they live in
Redis instead:

* `<ns>alive:<queue>`: the queue exists while this key does; its declaring process refreshes it
  (`keepalive`), so it disappears `ttl` seconds after that process dies, list and all. Its value
  is `1`, or `m<ms>` for a queue declared with `x-message-ttl`.
* `<ns>q:<queue>`: the messages, a list (pushed right, popped left by the consumer's BLPOP). A
  message with a time to live (its `expiration`, the queue's `x-message-ttl`, the shorter) is
  stored as `<epoch ms it expires>:<json>`; one popped after that time is dropped, not delivered.
* `<ns>bind:<exchange>`: a sorted set of bindings `[exchange type, routing key, queue]` scored by
  the time they expire, refreshed with the queue; publishers read the live ones.

A message is pushed only while its queue is alive (one script), so a publisher never re-creates
a queue its consumer deleted. Messages of transient queues are delivered at most once (no
lease): they are control requests, replies and events, which Celery sends without acks.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

#: Seconds an expiring queue without `x-expires` lives after its process stops refreshing it.
DEFAULT_TTL = 30.0
#: The shortest lifetime given to a transient queue, whatever its `x-expires`.
MIN_TTL = 6.0

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
    """Declare, bind, feed, measure and delete transient queues of one namespace in Redis."""

    def __init__(self, client: redis.Redis, namespace: str, max_length: int) -> None:
        self._client = client
        self.namespace = namespace
        self._max_length = max_length
        self._put: Callable[..., Any] = client.register_script(_PUT)
        self._lock = threading.Lock()
        self._owned: dict[str, float] = {}
        self._marks: dict[str, str] = {}
        self._bindings: dict[str, set[tuple[str, str, str]]] = {}

    def list_key(self, queue: str) -> str:
        """The Redis list holding the messages of `queue`."""
        return f"{self.namespace}q:{queue}"

    def _alive_key(self, queue: str) -> str:
        return f"{self.namespace}alive:{queue}"

    def _bind_key(self, exchange: str) -> str:
        return f"{self.namespace}bind:{exchange}"

    def owns(self, queue: str) -> bool:
        """Tell whether this process declared `queue` as transient (and keeps it alive)."""
        with self._lock:
            return queue in self._owned

    def declare(self, queue: str, ttl: float, message_ttl: int | None = None) -> None:
        """Create (or refresh) `queue`, whose messages live `message_ttl` ms if given; this
        process keeps it alive until `delete` or exit."""
        mark = "1" if message_ttl is None else f"m{message_ttl}"
        with self._lock:
            self._owned[queue] = ttl
            self._marks[queue] = mark
            self._bindings.setdefault(queue, set())
        self._client.set(self._alive_key(queue), mark, px=int(ttl * 1000))

    def exists(self, queue: str) -> bool:
        """Tell whether `queue` is alive (declared by a process still refreshing it)."""
        return bool(self._client.exists(self._alive_key(queue)))

    def bind(self, queue: str, exchange: str, kind: str, routing_key: str) -> None:
        """Bind `queue` to `exchange`; the binding lives as long as the queue."""
        with self._lock:
            ttl = self._owned.get(queue, DEFAULT_TTL)
            self._bindings.setdefault(queue, set()).add((exchange, kind, routing_key))
        member = json.dumps([kind, routing_key, queue])
        self._client.zadd(self._bind_key(exchange), {member: _expiry_ms(ttl)})

    def unbind(self, queue: str, exchange: str, kind: str, routing_key: str) -> None:
        """Remove one binding of `queue`."""
        with self._lock:
            self._bindings.get(queue, set()).discard((exchange, kind, routing_key))
        self._client.zrem(self._bind_key(exchange), json.dumps([kind, routing_key, queue]))

    def delete(self, queue: str) -> None:
        """Delete `queue`, its messages and the bindings this process made for it."""
        with self._lock:
            self._owned.pop(queue, None)
            self._marks.pop(queue, None)
            bindings = self._bindings.pop(queue, set())
        pipe = self._client.pipeline(transaction=False)
        pipe.delete(self._alive_key(queue), self.list_key(queue))
        for exchange, kind, key in bindings:
            pipe.zrem(self._bind_key(exchange), json.dumps([kind, key, queue]))
        pipe.execute()

    def delete_owned(self) -> None:
        """Delete every queue this process declared (its connection closes)."""
        with self._lock:
            queues = list(self._owned)
        for queue in queues:
            self.delete(queue)

    def keepalive(self) -> None:
        """Refresh the lifetime of every queue (and binding) this process declared."""
        with self._lock:
            owned = dict(self._owned)
            marks = dict(self._marks)
            bindings = {q: set(b) for q, b in self._bindings.items() if q in owned}
        if not owned:
            return
        pipe = self._client.pipeline(transaction=False)
        for queue, ttl in owned.items():
            pipe.set(self._alive_key(queue), marks.get(queue, "1"), px=int(ttl * 1000))
            pipe.pexpire(self.list_key(queue), int(ttl * 1000))
            for exchange, kind, key in bindings.get(queue, ()):
                pipe.zadd(self._bind_key(exchange), {json.dumps([kind, key, queue]): _expiry_ms(ttl)})
        pipe.execute()

    def min_ttl(self) -> float | None:
        """The shortest lifetime among this process's queues (None if it declared none)."""
        with self._lock:
            return min(self._owned.values()) if self._owned else None

    def routes(self, exchange: str) -> list[Binding]:
        """The live bindings of `exchange` in every process; expired ones are removed."""
        now = int(time.time() * 1000)
        pipe = self._client.pipeline(transaction=False)
        pipe.zremrangebyscore(self._bind_key(exchange), "-inf", now)
        pipe.zrangebyscore(self._bind_key(exchange), now, "+inf")
        members = pipe.execute()[1]
        routes: list[Binding] = []
        for member in members:
            kind, key, queue = json.loads(member)
            routes.append((str(kind), str(key), str(queue)))
        return routes

    def put(self, queue: str, payload: dict[str, Any]) -> bool:
        """Push a message onto `queue` if it is alive; tell whether it was. It expires after the
        shorter of its `expiration` and the queue's `x-message-ttl`."""
        keys = [self._alive_key(queue), self.list_key(queue)]
        now_ms = int(time.time() * 1000)
        expiration = (payload.get("properties") or {}).get("expiration")
        expires = now_ms + max(0, int(float(expiration))) if expiration is not None else 0
        return bool(self._put(keys=keys, args=[json.dumps(payload), self._max_length, expires, now_ms]))

    def size(self, queue: str) -> int:
        """How many messages wait in `queue`."""
        return int(self._client.llen(self.list_key(queue)))

    def purge(self, queue: str) -> int:
        """Drop every message of `queue`; return how many there were."""
        pipe = self._client.pipeline(transaction=True)
        pipe.llen(self.list_key(queue))
        pipe.delete(self.list_key(queue))
        return int(pipe.execute()[0])

    def names(self) -> list[str]:
        """Every transient queue alive in this namespace (any process's)."""
        prefix = f"{self.namespace}alive:"
        return sorted(str(key)[len(prefix):] for key in self._client.scan_iter(f"{prefix}*", count=500))

    def queue_of(self, list_key: str) -> str | None:
        """The queue whose message list is `list_key`, if it is one."""
        prefix = f"{self.namespace}q:"
        return list_key[len(prefix):] if list_key.startswith(prefix) else None


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
