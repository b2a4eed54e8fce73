"""When each node attempt of a run started and ended, on which worker, and how it ended.

One Redis hash per run, `<prefix>run:<run>:timeline`: token `node@iteration` -> JSON
`{uses, attempt, worker, start, end, state, due}`, written by the worker when an attempt starts
(`state` running) and when it ends (succeeded, failed, or retrying with the `due` time of the
next attempt). Each write is one script call that also counts the event in the deployment-wide
hash `<prefix>metrics` (`started|<uses>`, `succeeded|<uses>`, ..., `worker|<worker>`), and
records the attempt's queue wait (at its start) or run time (at its end) in the histogram hash
`<prefix>metrics:hist` (`stores/histograms.py`); the metrics endpoint exports both.
`flowcraft-celery show` reads the hash together with the run's ledger. It expires with the run's
other keys (once the run has ended, a late write keeps the expiry the ledger's `expires` key says
is left).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis

from flowcraft_celery.stores.histograms import NODE_SECONDS, QUEUE_WAIT_SECONDS, Observation

#: One attempt record with its counters and histogram observations (KEYS: the run's timeline, the
#: metrics hash, the run's `expires` key, the histograms hash); `RunLedger.enter` runs it too.
RECORD = """
local ttl = ARGV[3]
local left = redis.call('TTL', KEYS[3])
if left > 0 then ttl = left end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
if ARGV[5] ~= '' then redis.call('HINCRBY', KEYS[2], ARGV[5], 1) end
for i = 6, #ARGV, 3 do
  redis.call('HINCRBY', KEYS[4], ARGV[i] .. '|' .. ARGV[i + 1], 1)
  redis.call('HINCRBY', KEYS[4], ARGV[i] .. '|count', 1)
  redis.call('HINCRBYFLOAT', KEYS[4], ARGV[i] .. '|sum', ARGV[i + 2])
end
return 1
"""

_COUNT = "redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2]) return 1"

_OBSERVE = """
redis.call('HINCRBY', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 1)
redis.call('HINCRBY', KEYS[1], ARGV[1] .. '|count', 1)
redis.call('HINCRBYFLOAT', KEYS[1], ARGV[1] .. '|sum', ARGV[3])
return 1
"""

class Write(NamedTuple):
    """The keys and arguments of one `RECORD` call."""

    keys: list[str]
    args: list[Any]


#: How an attempt can end.
OUTCOMES = ("succeeded", "failed", "retrying")


@dataclass
class Attempt:
    """One node attempt being run; `end` records how it ended."""

    timeline: RunTimeline
    run_id: str
    token: str
    entry: dict[str, Any]

    def end(self, state: str, retry_in: float | None = None) -> None:
        """Record the end: `succeeded`, `failed`, or `retrying` (next attempt in `retry_in` s)."""
        self.timeline.apply(self.ending(state, retry_in))

    def ending(self, state: str, retry_in: float | None = None) -> Write:
        """`end` as of now without writing: the write, for a script that runs `RECORD` along with
        other work (`RunLedger.settle`) or for `RunTimeline.apply` later."""
        now = time.time()
        self.entry.update(state=state, end=now)
        if retry_in is not None:
            self.entry["due"] = now + retry_in
        uses = str(self.entry.get("uses"))
        ran = [Observation(NODE_SECONDS, {"uses": uses}, now - float(self.entry.get("start") or now))]
        return self.timeline._write(self.run_id, self.token, self.entry, f"{state}|{uses}", "", ran)


class RunTimeline:
    """Attempt records of runs and the deployment's node counters, in Redis."""

    def __init__(self, client: redis.Redis, prefix: str = "flowcraft:", ttl_seconds: int = 7 * 86400) -> None:
        self._redis = client
        self._prefix = prefix
        self._ttl = ttl_seconds
        self._record = client.register_script(RECORD)
        self._count = client.register_script(_COUNT)
        self._observe = client.register_script(_OBSERVE)

    def _key(self, run_id: str) -> str:
        return f"{self._prefix}run:{run_id}:timeline"

    @property
    def metrics_key(self) -> str:
        """The hash of deployment-wide counters."""
        return f"{self._prefix}metrics"

    @property
    def histograms_key(self) -> str:
        """The hash of deployment-wide histograms (`stores/histograms.py`)."""
        return f"{self._prefix}metrics:hist"

    def begin(self, run_id: str, node_token: str, uses: str, attempt: int, worker: str,
              queue_wait: float | None = None) -> Attempt:
        """Record that an attempt starts now on `worker` after waiting `queue_wait` seconds on its
        queue (None: it did not come through a queue); returns the handle to record its end."""
        started, write = self.beginning(run_id, node_token, uses, attempt, worker, queue_wait)
        self.apply(write)
        return started

    def apply(self, write: Write) -> None:
        """Run one `RECORD` write (from `beginning` or `Attempt.ending`)."""
        self._record(keys=write.keys, args=write.args)

    def beginning(self, run_id: str, node_token: str, uses: str, attempt: int, worker: str,
                  queue_wait: float | None = None) -> tuple[Attempt, Write]:
        """`begin` without writing: the handle, and the write for a script that runs `RECORD`
        along with other work (`RunLedger.enter`)."""
        entry: dict[str, Any] = {"uses": uses, "attempt": attempt, "worker": worker, "start": time.time(),
                                 "state": "running"}
        waited = [] if queue_wait is None else [Observation(QUEUE_WAIT_SECONDS, {"uses": uses}, queue_wait)]
        write = self._write(run_id, node_token, entry, f"started|{uses}", f"worker|{worker}", waited)
        return Attempt(self, run_id, node_token, entry), write

    def write(self, run_id: str, node_token: str, entry: Mapping[str, Any], counter: str, also: str = "",
              observations: Sequence[Observation] = ()) -> None:
        """Store one token's record, count `counter` (and `also`) and record `observations`: one
        script call."""
        self.apply(self._write(run_id, node_token, entry, counter, also, observations))

    def _write(self, run_id: str, node_token: str, entry: Mapping[str, Any], counter: str, also: str,
               observations: Sequence[Observation]) -> Write:
        """The keys and arguments of one `RECORD` call."""
        extra = [part for o in observations for part in o.arguments()]
        return Write([self._key(run_id), self.metrics_key, f"{self._prefix}run:{run_id}:expires", self.histograms_key],
                     [node_token, json.dumps(entry, separators=(",", ":")), self._ttl, counter, also, *extra])

    def observe(self, observation: Observation) -> None:
        """Add one value to a deployment-wide histogram (a run's duration)."""
        self._observe(keys=[self.histograms_key], args=list(observation.arguments()))

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

    def histograms(self) -> dict[str, float]:
        """The deployment-wide histogram fields: `<series>|<bucket>`, `|count`, `|sum` -> value."""
        return {_text(k): float(v) for k, v in self._redis.hgetall(self.histograms_key).items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
