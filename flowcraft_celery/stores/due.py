"""When reconcile should next look at each live run: a Redis sorted set of due times per deployment.

Reconcile looks only at runs whose time has come, so a pass costs what is due, not what is alive.
A run is *armed* (due `stall seconds` after its latest sign of life) when it starts, when its
nodes touch it, and before an event that moves it on is sent (a resume, a child run's end), and
*parked* (left out) once reconcile found it waits only for events (an approval, a child run).
A pass *takes* the earliest due runs up to its budget, leasing them so a concurrent pass skips
them, and then reschedules or parks each one only if nothing re-armed it meanwhile.

Redis can be lost; the index then is empty while Cosmos still knows every live run. The index's
*marker* says since when it has been kept: when it is missing, reconcile sweeps the deployment's
live runs from Cosmos, one page per pass (the continuation is kept in `sweep`), and arms each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis

_TAKE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local taken = {}
for _, run in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[3], run)
  taken[#taken + 1] = run
end
return taken
"""

_RESCHEDULE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then
  return 0
end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return 1
"""

_SWEEP = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  redis.call('SET', KEYS[2], '')
end
return redis.call('GET', KEYS[2])
"""


@dataclass(frozen=True)
class Taken:
    """Runs a pass took, leased until `lease` (the score a reschedule expects to find)."""

    runs: list[str]
    lease: float


class DueIndex:
    """The due times of one deployment's live runs (`<prefix>due:<deployment>`)."""

    def __init__(self, client: redis.Redis, prefix: str, deployment: str) -> None:
        self._client = client
        base = f"{prefix}due:{deployment}"
        self.key, self._marker, self._sweep_key = base, f"{base}:since", f"{base}:sweep"
        self._take = client.register_script(_TAKE)
        self._reschedule = client.register_script(_RESCHEDULE)
        self._sweep = client.register_script(_SWEEP)

    def arm(self, run_id: str, at: float) -> None:
        """Make the run due at `at` (whatever it was due at before, or parked)."""
        self._client.zadd(self.key, {run_id: at})

    def arm_all(self, due: dict[str, float]) -> None:
        """Arm runs the index does not hold (a sweep's finds), keeping the due time of those it holds."""
        if due:
            self._client.zadd(self.key, due, nx=True)

    def take(self, now: float, limit: int, lease: float) -> Taken:
        """The earliest runs due by `now`, at most `limit`, each leased until `now + lease`."""
        until = now + lease
        runs = self._take(keys=[self.key], args=[repr(now), limit, repr(until)])
        return Taken([r.decode() if isinstance(r, bytes) else str(r) for r in runs], until)

    def reschedule(self, run_id: str, lease: float, at: float | None) -> bool:
        """Make a taken run due at `at`, or park it (`None`), unless something re-armed it since
        it was taken; True if applied."""
        return bool(self._reschedule(keys=[self.key], args=[run_id, repr(lease), "" if at is None else repr(at)]))

    def forget(self, run_ids: Sequence[str]) -> None:
        """Drop runs that ended."""
        if run_ids:
            self._client.zrem(self.key, *run_ids)

    def due_at(self, run_id: str) -> float | None:
        """When the run is due, or None when parked or unknown."""
        score = self._client.zscore(self.key, run_id)
        return None if score is None else float(score)

    def size(self) -> int:
        """How many runs the index holds (parked ones are not held)."""
        return int(self._client.zcard(self.key))

    def sweep_position(self, now: float) -> str | None:
        """Where the sweep of Cosmos stands: None when the index is whole, '' to begin one (the
        marker was missing, so Redis lost the index or it is new), else the continuation."""
        position = self._sweep(keys=[self._marker, self._sweep_key], args=[repr(now)])
        if position is None:
            return None
        return position.decode() if isinstance(position, bytes) else str(position)

    def sweep_moved(self, continuation: str | None) -> None:
        """Record how far the sweep got; `None` when it is done."""
        if continuation is None:
            self._client.delete(self._sweep_key)
        else:
            self._client.set(self._sweep_key, continuation)
