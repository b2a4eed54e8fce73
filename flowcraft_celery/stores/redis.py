"""CoordinationStore on Redis: fan-in arrivals, once-only claims and owner-token locks.

Each operation is one Redis command (a Lua script run by EVALSHA), so it is atomic and
idempotent under redelivery: an arrival is recorded once per predecessor (the first word wins
between arrive and skip) and answered with the join's whole state; a claim answers yes to its
first holder and to that holder again; a lock is re-entrant for its token and released only by
it. Join and claim keys never expire while their run lives (a run may wait for months); when the
run ends, retention gives them an expiry (`expire_scopes`), and a late arrival keeps it. A
positive `ttl_seconds` makes them expire that long after their last write instead. Keys of one
scope share a hash tag (`{scope}`) for Redis Cluster.
`commands` counts the Redis commands this store has sent, for benchmarks.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable
from typing import Any

import redis
from redis.exceptions import NoScriptError

from flowcraft_celery.stores.base import JoinState

#: How long join and claim keys live after their last write: 0, for as long as their run lives.
DEFAULT_TTL_SECONDS = 0.0

_ARRIVE = """
local arrived, skipped = KEYS[1], KEYS[2]
local predecessor = ARGV[1]
if redis.call('HEXISTS', arrived, predecessor) == 0
    and redis.call('SISMEMBER', skipped, predecessor) == 0 then
  if ARGV[3] == '1' then
    redis.call('SADD', skipped, predecessor)
  else
    redis.call('HSET', arrived, predecessor, ARGV[2])
  end
end
if tonumber(ARGV[4]) > 0 then
  redis.call('PEXPIRE', arrived, ARGV[4])
  redis.call('PEXPIRE', skipped, ARGV[4])
end
if redis.call('HLEN', arrived) + redis.call('SCARD', skipped) >= tonumber(ARGV[5]) then
  return {redis.call('HGETALL', arrived), redis.call('SMEMBERS', skipped), 1}
end
return {redis.call('HKEYS', arrived), redis.call('SMEMBERS', skipped), 0}
"""

_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  if tonumber(ARGV[2]) > 0 then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  else
    redis.call('SET', KEYS[1], ARGV[1])
  end
  return 1
end
if holder == ARGV[1] then
  return 1
end
return 0
"""

_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
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
    """A reply as text, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else value


def _milliseconds(seconds: float) -> int:
    """A TTL in whole milliseconds, at least 1 (Redis refuses 0); 0 for no expiry."""
    return max(1, int(seconds * 1000)) if seconds > 0 else 0


def _glob_escape(text: str) -> str:
    """`text` with Redis glob metacharacters escaped, for SCAN MATCH."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class _Script:
    """A Lua script's source and SHA1, the name EVALSHA runs it by."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class RedisCoordinationStore:
    """Joins, claims and locks under `prefix` in one Redis database."""

    def __init__(
        self, client: redis.Redis | str, prefix: str = "flowcraft:",
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
    ) -> None:
        self._redis = redis.Redis.from_url(client) if isinstance(client, str) else client
        #: The Redis client (the ledger takes this store's locks in its own scripts on the same one).
        self.client = self._redis
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self._count_lock = threading.Lock()
        self._commands = 0
        self._arrive = _Script(_ARRIVE)
        self._claim = _Script(_CLAIM)
        self._acquire = _Script(_ACQUIRE)
        self._release = _Script(_RELEASE)

    @classmethod
    def from_url(
        cls, url: str, prefix: str = "flowcraft:", ttl_seconds: float = DEFAULT_TTL_SECONDS,
    ) -> RedisCoordinationStore:
        """Connect with a `redis://` URL."""
        return cls(redis.Redis.from_url(url), prefix, ttl_seconds)

    @property
    def commands(self) -> int:
        """Redis commands sent so far by this store (script loads and SCANs included)."""
        return self._commands

    def _count(self, n: int = 1) -> None:
        """Add `n` to the command counter."""
        with self._count_lock:
            self._commands += n

    def _run(self, script: _Script, keys: list[str], args: list[str | int]) -> Any:
        """One EVALSHA; on NOSCRIPT (a restarted or flushed server) load the script and retry."""
        self._count()
        try:
            return self._redis.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            self._count(2)
            self._redis.script_load(script.source)
            return self._redis.evalsha(script.sha, len(keys), *keys, *args)

    def join_keys(self, scope: str) -> tuple[str, str]:
        """The Redis keys of a join: the arrived hash and the skipped set."""
        return f"{self.prefix}join:{{{scope}}}:arrived", f"{self.prefix}join:{{{scope}}}:skipped"

    def claim_key(self, scope: str) -> str:
        """The Redis key of a claim."""
        return f"{self.prefix}claim:{{{scope}}}"

    def lock_key(self, name: str) -> str:
        """The Redis key of a lock."""
        return f"{self.prefix}lock:{{{name}}}"

    def arrive(self, scope: str, predecessor: str, value: Any, skipped: bool = False,
               values_from: int = 0) -> JoinState:
        """Record one predecessor's arrival (or skip) at a join, once, and return the state after
        it: with the arrived values once `values_from` predecessors arrived or were skipped,
        before that their names only (one script either way)."""
        encoded = json.dumps(value, separators=(",", ":"))
        flat, members, with_values = self._run(
            self._arrive, list(self.join_keys(scope)),
            [predecessor, encoded, "1" if skipped else "0", _milliseconds(self.ttl_seconds), values_from],
        )
        if with_values:
            arrived = {_text(flat[i]): json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
        else:
            arrived = dict.fromkeys(map(_text, flat))
        return JoinState(arrived, {_text(member) for member in members})

    def claim(self, scope: str, token: str, ttl: float | None = None) -> bool:
        """Claim `scope` for `token`: True for the first claimant and again for the same token."""
        seconds = self.ttl_seconds if ttl is None else ttl
        return bool(self._run(self._claim, [self.claim_key(scope)], [token, _milliseconds(seconds)]))

    def acquire(self, name: str, token: str, ttl: float) -> bool:
        """Take a lock for `token` if free, or extend it if already ours; it expires after `ttl` s."""
        return bool(self._run(self._acquire, [self.lock_key(name)], [token, _milliseconds(ttl)]))

    def holder(self, name: str) -> str | None:
        """Who holds lock `name` right now (None when it is free or lapsed)."""
        self._count()
        value = self._redis.get(self.lock_key(name))
        return None if value is None else _text(value)

    def release(self, name: str, token: str) -> bool:
        """Release a lock only if `token` owns it; True if this call released it."""
        return bool(self._run(self._release, [self.lock_key(name)], [token]))

    def scope_keys(self, scopes: Iterable[str]) -> list[str]:
        """The Redis keys of these scopes' joins and claims."""
        return [key for scope in scopes for key in (*self.join_keys(scope), self.claim_key(scope))]

    def expire_scopes(self, scopes: Iterable[str], seconds: int) -> None:
        """Let the joins and claims of these scopes expire `seconds` from now (one round trip)."""
        with self._redis.pipeline(transaction=False) as pipe:
            for key in self.scope_keys(scopes):
                pipe.expire(key, seconds)
            self._count(len(pipe))
            pipe.execute()

    def delete_scopes(self, scopes: Iterable[str], dry_run: bool = False) -> int:
        """Delete the joins and claims of these scopes (with `dry_run` only count them); return how
        many keys existed."""
        keys = self.scope_keys(scopes)
        if not keys:
            return 0
        self._count()
        return int(self._redis.exists(*keys) if dry_run else self._redis.unlink(*keys))

    def delete_scope(self, scope_prefix: str) -> int:
        """Delete the joins and claims whose scope starts with `scope_prefix` (e.g. `<run id>:`)."""
        deleted = 0
        escaped = _glob_escape(scope_prefix)
        for kind in ("join", "claim"):
            pattern = f"{_glob_escape(self.prefix)}{kind}:{{{escaped}*"
            cursor = 0
            while True:
                self._count()
                cursor, keys = self._redis.scan(cursor, match=pattern, count=500)
                if keys:
                    self._count()
                    deleted += int(self._redis.unlink(*keys))
                if int(cursor) == 0:
                    break
        return deleted
