"""A run's outstanding work in Redis: what is pending, what finished, and whether it halted.

Every node message that has been decided but not finished is a *pending* entry (its token
`node@iteration` -> the message payload), so completion is "nothing pending" and the
reconciler can re-publish exactly what is outstanding after a crash. Each change is one
atomic script call, idempotent under redelivery: a token that finished is never pending again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import redis

_PROGRESS = """
local pending, finished, times = KEYS[1], KEYS[2], KEYS[3]
local ttl = ARGV[1]
local left = redis.call('TTL', KEYS[4])
if left > 0 then ttl = left end
if ARGV[2] ~= '' then
  redis.call('HDEL', pending, ARGV[2])
  if redis.call('SADD', finished, ARGV[2]) == 1 then
    redis.call('HSET', times, ARGV[2], ARGV[3])
    redis.call('EXPIRE', times, ttl)
  end
end
for i = 4, #ARGV, 2 do
  if redis.call('SISMEMBER', finished, ARGV[i]) == 0 then
    redis.call('HSET', pending, ARGV[i], ARGV[i + 1])
  end
end
redis.call('EXPIRE', pending, ttl)
redis.call('EXPIRE', finished, ttl)
return redis.call('HLEN', pending)
"""

_CHECK = """
return {redis.call('SISMEMBER', KEYS[1], ARGV[1]), redis.call('GET', KEYS[2]) or '',
        redis.call('SISMEMBER', KEYS[3], ARGV[1])}
"""


#: The names of a run's keys, `<prefix>run:<run id>:<name>` (`timeline` is stores/timeline.py's).
#: `expires` exists once the run has ended: its TTL is what is left of the run's retention, and a
#: late write (progress recorded by the caller of an inlined node that ended the run, an attempt's
#: end in the timeline) keeps that expiry instead of starting a new one.
RUN_KEY_NAMES = ("pending", "finished", "times", "recording", "halt", "dynamic", "awaiting", "timeline", "expires")


def token(node_id: str, iteration: int) -> str:
    """The ledger token of one node execution."""
    return f"{node_id}@{iteration}"


class RunLedger:
    """Pending/finished bookkeeping, halt flags and dynamic nodes of runs, in Redis."""

    def __init__(self, client: redis.Redis, prefix: str = "flowcraft:", ttl_seconds: int = 7 * 86400) -> None:
        self._redis = client
        self._prefix = prefix
        self._ttl = ttl_seconds
        self._progress = client.register_script(_PROGRESS)
        self._check = client.register_script(_CHECK)

    def _key(self, run_id: str, name: str) -> str:
        return f"{self._prefix}run:{run_id}:{name}"

    def progress(self, run_id: str, done: str | None, added: Mapping[str, Mapping[str, Any]],
                 finished_at: float | None = None) -> int:
        """Mark `done` finished (at `finished_at`, default now) and add `added` (token -> payload)
        as pending; return how many remain."""
        args: list[Any] = [self._ttl, done or "", repr(time.time() if finished_at is None else finished_at)]
        for name, payload in added.items():
            args += [name, json.dumps(payload, separators=(",", ":"))]
        keys = [self._key(run_id, "pending"), self._key(run_id, "finished"), self._key(run_id, "times"),
                self._key(run_id, "expires")]
        return int(self._progress(keys=keys, args=args))

    def check(self, run_id: str, node_token: str) -> tuple[bool, str, bool]:
        """Whether the token finished, the run's halt reason ('' if running), and whether an
        output may already be recorded for the token (see `mark_recording`)."""
        keys = [self._key(run_id, "finished"), self._key(run_id, "halt"), self._key(run_id, "recording")]
        finished, halted, recording = self._check(keys=keys, args=[node_token])
        reason = halted.decode() if isinstance(halted, bytes) else str(halted)
        return bool(finished), reason, bool(recording)

    def mark_recording(self, run_id: str, node_token: str) -> None:
        """Note, before writing an output, that one may exist: a redelivery then looks it up
        instead of running the node again (and a first delivery skips that lookup)."""
        key = self._key(run_id, "recording")
        self._redis.sadd(key, node_token)
        self._redis.expire(key, self._ttl)

    def halt(self, run_id: str, reason: str) -> None:
        """Stop the run: workers drop its messages from now on."""
        self._redis.set(self._key(run_id, "halt"), reason, ex=self._ttl)

    def pending(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Outstanding work: token -> message payload."""
        raw = self._redis.hgetall(self._key(run_id, "pending"))
        return {_text(k): json.loads(v) for k, v in raw.items()}

    def update_pending(self, run_id: str, node_token: str, payload: Mapping[str, Any]) -> None:
        """Replace a pending entry's payload (a sleep's wake time, a resume's result)."""
        self._redis.hset(self._key(run_id, "pending"), node_token, json.dumps(payload, separators=(",", ":")))

    def add_dynamic(self, run_id: str, parent_token: str, addition: Mapping[str, Any]) -> None:
        """Remember nodes a result added, so every worker rebuilds the same graph."""
        key = self._key(run_id, "dynamic")
        self._redis.hset(key, parent_token, json.dumps(addition, separators=(",", ":")))
        self._redis.expire(key, self._ttl)

    def dynamic(self, run_id: str) -> list[dict[str, Any]]:
        """Every addition of the run, in no particular order."""
        return [json.loads(v) for v in self._redis.hgetall(self._key(run_id, "dynamic")).values()]

    def await_token(self, run_id: str, node_token: str) -> list[str]:
        """Record that `node_token` waits for an external event; return every waiting token."""
        key = self._key(run_id, "awaiting")
        self._redis.sadd(key, node_token)
        self._redis.expire(key, self._ttl)
        return self.awaiting(run_id)

    def unawait_token(self, run_id: str, node_token: str) -> list[str]:
        """The token's event arrived; return the tokens still waiting."""
        self._redis.srem(self._key(run_id, "awaiting"), node_token)
        return self.awaiting(run_id)

    def awaiting(self, run_id: str) -> list[str]:
        """Tokens of nodes waiting for an external event, sorted."""
        return sorted(_text(t) for t in self._redis.smembers(self._key(run_id, "awaiting")))

    def finish_times(self, run_id: str) -> list[tuple[str, float]]:
        """When each node execution finished (the worker's clock), in order."""
        raw = self._redis.hgetall(self._key(run_id, "times"))
        return sorted(((_text(k), float(v)) for k, v in raw.items()), key=lambda item: item[1])

    def tokens(self, run_id: str) -> set[str]:
        """Every token of the run the ledger knows: finished and pending."""
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.smembers(self._key(run_id, "finished"))
            pipe.hkeys(self._key(run_id, "pending"))
            finished, pending = pipe.execute()
        return {_text(t) for t in (*finished, *pending)}

    def expire_run(self, run_id: str, seconds: int) -> None:
        """Let every ledger key of the run expire `seconds` from now (one round trip)."""
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(self._key(run_id, "expires"), seconds, ex=seconds)
            for name in RUN_KEY_NAMES:
                pipe.expire(self._key(run_id, name), seconds)
            pipe.execute()

    def delete_run(self, run_id: str, dry_run: bool = False) -> int:
        """Delete the run's ledger keys (with `dry_run` only count them); return how many existed."""
        keys = [self._key(run_id, name) for name in RUN_KEY_NAMES]
        return int(self._redis.exists(*keys) if dry_run else self._redis.delete(*keys))

    def finished_count(self, run_id: str) -> int:
        """How many node executions of the run have finished."""
        return int(self._redis.scard(self._key(run_id, "finished")))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
