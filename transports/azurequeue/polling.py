"""Decide when to poll each consumed queue: at once while busy, geometrically less often when idle.

With wake-up signals (Redis) the schedule only keeps the safety net: a queue is polled when a
signal wakes it, again at once after a full batch, and otherwise every `max_interval`
seconds. Without signals it backs off geometrically after empty polls. Either way a poll can
be *expected* at a time (a delayed message becomes visible then); an expected poll that finds
nothing is retried a few times shortly after, since the message's visibility is kept by the
server's clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Seconds after an expected poll that found nothing at which it is retried.
EXPECT_RETRIES = (0.05, 0.15, 0.4, 1.0)


@dataclass
class QueuePollState:
    """The polling rhythm of one queue."""

    next_at: float = 0.0
    interval: float = 0.0
    since: float | None = None
    expected: list[tuple[float, int]] = field(default_factory=list)


class PollSchedule:
    """Per-queue polling times between `min_interval` and `max_interval` seconds.

    Without signals, a queue that returned a full batch is polled again at once, one that
    returned a partial batch after `min_interval`; each empty poll doubles the wait, from
    `min_interval` up to `max_interval`, so an idle queue costs 1/max_interval requests per
    second and a busy one is drained without pause. The wait never exceeds a quarter of the
    time since the queue was first polled, so a short-lived consumer (the reply queue of
    `celery inspect`) keeps polling often enough to collect replies before its timeout.
    With `signalled`, partial and empty polls wait `max_interval` (signals wake the queue).
    """

    AGE_FRACTION = 0.25

    def __init__(self, min_interval: float, max_interval: float, signalled: bool = False) -> None:
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.signalled = signalled
        self._states: dict[str, QueuePollState] = {}

    def state(self, queue: str) -> QueuePollState:
        """Return the state of `queue`, new queues being due at once."""
        return self._states.setdefault(queue, QueuePollState())

    def when(self, queue: str) -> float:
        """When `queue` is next due: its rhythm or its earliest expected poll."""
        state = self.state(queue)
        if state.expected:
            return min(state.next_at, state.expected[0][0])
        return state.next_at

    def due(self, queues: list[str], now: float) -> str | None:
        """Return the queue due longest ago among those due at `now`, or None."""
        ready = [q for q in queues if self.when(q) <= now]
        return min(ready, key=self.when) if ready else None

    def next_time(self, queues: list[str]) -> float:
        """Return when the earliest of `queues` becomes due."""
        return min(self.when(q) for q in queues)

    def next_expected(self, queues: list[str]) -> float | None:
        """When the earliest expected poll of `queues` is due (None: none is expected)."""
        times = [self.state(q).expected[0][0] for q in queues if self.state(q).expected]
        return min(times) if times else None

    def got_messages(self, queue: str, now: float, full: bool) -> None:
        """Record a poll that returned messages: again at once if the batch was full; else
        after `min_interval` (a trickle is collected in batches), or with signals, when woken."""
        state = self.state(queue)
        if state.since is None:
            state.since = now
        self._settle_expected(state, now, found=True)
        state.interval = 0.0
        if full:
            state.next_at = now
        else:
            state.next_at = now + (self.max_interval if self.signalled else self.min_interval)

    def was_empty(self, queue: str, now: float) -> None:
        """Record an empty poll: wait twice as long as last time (within bounds)."""
        state = self.state(queue)
        if state.since is None:
            state.since = now
        self._settle_expected(state, now, found=False)
        if self.signalled:
            state.interval = self.max_interval
        else:
            age_cap = max(self.min_interval, (now - state.since) * self.AGE_FRACTION)
            doubled = max(self.min_interval, state.interval * 2)
            state.interval = min(self.max_interval, age_cap, doubled)
        state.next_at = now + state.interval

    def wake(self, queue: str, now: float) -> None:
        """Make `queue` due at `now` at the latest, e.g. after a signal or a local publish."""
        state = self.state(queue)
        state.interval = 0.0
        state.next_at = min(state.next_at, now)

    def expect(self, queue: str, at: float) -> None:
        """Poll `queue` at `at` (a delayed message becomes visible then), retrying if empty."""
        state = self.state(queue)
        state.expected.append((at, 0))
        state.expected.sort()

    def take_expected(self, queue: str, now: float) -> int:
        """Drop the expected polls of `queue` due by `now` (it cannot poll); return how many."""
        state = self.state(queue)
        kept = [e for e in state.expected if e[0] > now]
        dropped = len(state.expected) - len(kept)
        state.expected = kept
        return dropped

    def _settle_expected(self, state: QueuePollState, now: float, found: bool) -> None:
        """Consume the expected polls this poll served; an empty one is retried later."""
        kept = [e for e in state.expected if e[0] > now]
        served = [e for e in state.expected if e[0] <= now]
        if not found:
            for _, attempt in served:
                if attempt < len(EXPECT_RETRIES):
                    kept.append((now + EXPECT_RETRIES[attempt], attempt + 1))
        state.expected = sorted(kept)

    def forget(self, queue: str) -> None:
        """Drop the state of a queue no longer consumed."""
        self._states.pop(queue, None)
