"""When each node attempt of a run started and ended, on which worker, and how it ended.

One Redis hash per run, `<prefix>run:<run>:timeline`: token `node@iteration` -> JSON
`{uses, attempt, worker, start, end, state, due}`, written by the worker when an attempt starts
(`state` running) and when it ends (succeeded, failed, or retrying with the `due` time of the
next attempt). Each write is one script call that also counts the event in the deployment-wide
hash `<prefix>metrics` (`started|<uses>`, `succeeded|<uses>`, ...), which the metrics endpoint
exports. `flowcraft-celery show` reads the hash together with the run's ledger. It expires with
the run's other keys (once the run has ended, a late write keeps the expiry the ledger's
`expires` key says is left).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

_RECORD = """
local ttl = ARGV[3]
local left = redis.call('TTL', KEYS[3])
if left > 0 then ttl = left end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
return 1
"""

_COUNT = "redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2]) return 1"

#: How an attempt can end.
OUTCOMES = ("succeeded", "failed", "retrying")


@dataclass
class Attempt:
    """One node attempt being run; `end` records how it ended."""

    timeline: RunTimeline
    run_id: str
    token: str
    entry: dict[str, Any]

    def begin(self) -> None:
        """Record that the attempt started (what `RunTimeline.begin` writes)."""
        keys, args = self.begin_write()
        self.timeline.write_raw(keys, args)

    def begin_write(self) -> tuple[list[str], list[Any]]:
        """The keys and arguments of the start's record (stores/timeline.py's record script takes
        them), so a script of another store can write it together with its own work."""
        return self.timeline.record_write(self.run_id, self.token, self.entry, f"started|{self.entry.get('uses')}")

    def end(self, state: str, retry_in: float | None = None) -> None:
        """Record the end: `succeeded`, `failed`, or `retrying` (next attempt in `retry_in` s)."""
        now = time.time()
        self.entry.update(state=state, end=now)
        if retry_in is not None:
            self.entry["due"] = now + retry_in
        self.timeline.write(self.run_id, self.token, self.entry, f"{state}|{self.entry.get('uses')}")


class RunTimeline:
    """Attempt records of runs and the deployment's node counters, in Redis."""

    def __init__(self, client: redis.Redis, prefix: str = "flowcraft:", ttl_seconds: int = 7 * 86400) -> None:
        self._redis = client
        self._prefix = prefix
        self._ttl = ttl_seconds
        self._record = client.register_script(_RECORD)
        self._count = client.register_script(_COUNT)

    def _key(self, run_id: str) -> str:
        return f"{self._prefix}run:{run_id}:timeline"

    @property
    def metrics_key(self) -> str:
        """The hash of deployment-wide counters."""
        return f"{self._prefix}metrics"

    def attempt(self, run_id: str, node_token: str, uses: str, attempt: int, worker: str) -> Attempt:
        """The record of an attempt starting now on `worker`, not written yet (`Attempt.begin`)."""
        entry: dict[str, Any] = {"uses": uses, "attempt": attempt, "worker": worker, "start": time.time(),
                                 "state": "running"}
        return Attempt(self, run_id, node_token, entry)

    def begin(self, run_id: str, node_token: str, uses: str, attempt: int, worker: str) -> Attempt:
        """Record that an attempt starts now on `worker`; returns the handle to record its end."""
        trace = self.attempt(run_id, node_token, uses, attempt, worker)
        trace.begin()
        return trace

    def record_write(self, run_id: str, node_token: str, entry: Mapping[str, Any],
                     counter: str) -> tuple[list[str], list[Any]]:
        """The keys and arguments of the record script for one token's record and `counter`."""
        return ([self._key(run_id), self.metrics_key, f"{self._prefix}run:{run_id}:expires"],
                [node_token, json.dumps(entry, separators=(",", ":")), self._ttl, counter])

    def write(self, run_id: str, node_token: str, entry: Mapping[str, Any], counter: str) -> None:
        """Store one token's record and count `counter`: one script call."""
        self.write_raw(*self.record_write(run_id, node_token, entry, counter))

    def write_raw(self, keys: list[str], args: list[Any]) -> None:
        """Run the record script with what `record_write` made."""
        self._record(keys=keys, args=args)

    def count(self, counter: str, amount: int = 1) -> None:
        """Add to one deployment-wide counter (reconcile passes, infrastructure retries)."""
        self._count(keys=[self.metrics_key], args=[counter, amount])

    def entries(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Every attempt record of the run: token -> the latest attempt's record."""
        raw = self._redis.hgetall(self._key(run_id))
        return {_text(k): json.loads(v) for k, v in raw.items()}

    def counters(self) -> dict[str, int]:
        """The deployment-wide counters: `<event>|<uses>` -> count."""
        return {_text(k): int(v) for k, v in self._redis.hgetall(self.metrics_key).items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
