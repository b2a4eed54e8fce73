"""Decide when to poll each consumed queue: at once while busy, geometrically less often when idle."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class QueuePollState:
    """The polling rhythm of one queue."""

    next_at: float = 0.0
    interval: float = 0.0
    since: float | None = None


class PollSchedule:
    """Per-queue geometric backoff between `min_interval` and `max_interval` seconds.

    A queue that returned a full batch is polled again at once, one that returned a partial
    batch after `min_interval`; each empty poll doubles the wait,
    from `min_interval` up to `max_interval`, so an idle queue costs 1/max_interval requests
    per second and a busy one is drained without pause. The wait never exceeds a quarter of
    the time since the queue was first polled, so a short-lived consumer (the reply queue of
    `celery inspect`) keeps polling often enough to collect replies before its timeout.
    """

    AGE_FRACTION = 0.25

    def __init__(self, min_interval: float, max_interval: float) -> None:
        self.min_interval = min_interval
        self.max_interval = max_interval
        self._states: dict[str, QueuePollState] = {}

    def state(self, queue: str) -> QueuePollState:
        """Return the state of `queue`, new queues being due at once."""
        return self._states.setdefault(queue, QueuePollState())

    def due(self, queues: list[str], now: float) -> str | None:
        """Return the queue polled longest ago among those due at `now`, or None."""
        ready = [q for q in queues if self.state(q).next_at <= now]
        return min(ready, key=lambda q: self.state(q).next_at) if ready else None

    def next_time(self, queues: list[str]) -> float:
        """Return when the earliest of `queues` becomes due."""
        return min(self.state(q).next_at for q in queues)

    def got_messages(self, queue: str, now: float, full: bool) -> None:
        """Record a poll that returned messages: again at once if the batch was full, else
        after `min_interval`, so a trickle is collected in batches rather than one by one."""
        state = self.state(queue)
        if state.since is None:
            state.since = now
        state.interval = 0.0
        state.next_at = now if full else now + self.min_interval

    def was_empty(self, queue: str, now: float) -> None:
        """Record an empty poll: wait twice as long as last time (within bounds)."""
        state = self.state(queue)
        if state.since is None:
            state.since = now
        age_cap = max(self.min_interval, (now - state.since) * self.AGE_FRACTION)
        doubled = max(self.min_interval, state.interval * 2)
        state.interval = min(self.max_interval, age_cap, doubled)
        state.next_at = now + state.interval

    def wake(self, queue: str, now: float) -> None:
        """Make `queue` due at once, e.g. after this process published to it."""
        state = self.state(queue)
        state.interval = 0.0
        state.next_at = min(state.next_at, now)

    def forget(self, queue: str) -> None:
        """Drop the state of a queue no longer consumed."""
        self._states.pop(queue, None)
