"""CoordinationStore on Redis: fan-in arrivals, once-only claims and owner-token locks.

Each operation is one Redis command (a Lua script or SET NX), idempotent under redelivery:
an arrival is recorded once per predecessor (first word wins between arrive and skip), a
claim answers yes to its first holder and to that same holder again, and a lock is released
only by the token that holds it. Keys expire after `ttl_seconds` so finished runs leave nothing.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from flowcraft_celery.stores.base import JoinState

_ARRIVE = """
local arrived, skipped = KEYS[1], KEYS[2]
local pred = ARGV[1]
if redis.call('HEXISTS', arrived, pred) == 0 and redis.call('SISMEMBER', skipped, pred) == 0 then
  if ARGV[3] == '1' then
    redis.call('SADD', skipped, pred)
  else
    redis.call('HSET', arrived, pred, ARGV[2])
  end
  redis.call('EXPIRE', arrived, ARGV[4])
  redis.call('EXPIRE', skipped, ARGV[4])
end
return {redis.call('HGETALL', arrived), redis.call('SMEMBERS', skipped)}
"""

_CLAIM = """
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
if current == ARGV[1] then return 1 end
return 0
"""

_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if not current or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisCoordinationStore:
    """Joins, claims and locks under `prefix` in one Redis database."""

    def __init__(self, client: redis.Redis, prefix: str = "flowcraft:", ttl_seconds: int = 7 * 86400) -> None:
        self._redis = client
        self._prefix = prefix
        self._ttl = ttl_seconds
        self._arrive = client.register_script(_ARRIVE)
        self._claim = client.register_script(_CLAIM)
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, prefix: str = "flowcraft:") -> RedisCoordinationStore:
        """Connect with a `redis://` URL."""
        return cls(redis.Redis.from_url(url), prefix)

    def arrive(self, scope: str, predecessor: str, value: Any, skipped: bool = False) -> JoinState:
        keys = [f"{self._prefix}join:{scope}:arrived", f"{self._prefix}join:{scope}:skipped"]
        args = [predecessor, json.dumps(value, separators=(",", ":")), "1" if skipped else "0", self._ttl]
        flat, skips = self._arrive(keys=keys, args=args)
        arrived = {_text(flat[i]): json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
        return JoinState(arrived, {_text(s) for s in skips})

    def claim(self, scope: str, token: str, ttl: float | None = None) -> bool:
        seconds = int(ttl) if ttl else self._ttl
        return bool(self._claim(keys=[f"{self._prefix}claim:{scope}"], args=[token, seconds]))

    def acquire(self, name: str, token: str, ttl: float) -> bool:
        return bool(self._acquire(keys=[f"{self._prefix}lock:{name}"], args=[token, int(ttl * 1000)]))

    def release(self, name: str, token: str) -> bool:
        return bool(self._release(keys=[f"{self._prefix}lock:{name}"], args=[token]))
