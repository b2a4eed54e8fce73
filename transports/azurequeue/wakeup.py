"""Wake-up tokens over Redis: tell one idle consumer that an Azure queue has a message.

Azure Queue Storage has no long polling, so without a signal a consumer either polls often
(requests cost money) or notices work late. After sending a message the sender pushes a token
onto the queue's Redis list (`wake:<queue>`); consumers wait on those lists with one BLPOP,
so exactly one consumer with room wakes per token and polls Azure at once. Before receiving a
batch of up to n messages it claims up to n tokens (so no other consumer wakes for messages it
is about to get), and after receiving k messages it drops the tokens it did not claim for them.
A sender that starts a send to one queue within `BURST_GAP` of its previous send's end (a loop
of sends, a fan-out; not a chain, whose next send from a process comes a whole task later, and
a fast task is shorter than one send to a distant queue) holds the burst's further tokens for up to
`COALESCE` seconds and pushes them as one counted token (`n<k>`), so one consumer wakes and
receives them in one batch instead of each consumer chasing single messages; the first message
of a burst is signalled at once (held tokens are pushed when the connection closes or the
process exits). A delayed message (countdown, retry) pushes `@<epoch>`, the time it becomes
visible, onto `due:<queue>`; the consumer that pops it polls at that time. Tokens are
hints: a lost one (Redis down, a sender without Redis) only means the message waits for the
safety-net poll.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from .outages import OUTAGES, redis_endpoint, unanswered

if TYPE_CHECKING:
    from .redisside import RedisKeys

logger = logging.getLogger(__name__)

#: Tokens kept per queue; a longer backlog is found by polling (a full batch polls again).
MAX_TOKENS = 1000
#: Tokens live this long without a consumer to pop them (the safety-net poll covers the rest).
TOKEN_TTL_MS = 60_000
#: Seconds between two warnings about Redis being unreachable from the sending side.
WARN_EVERY = 30.0
#: Seconds a sender skips signals after Redis failed (a send must not wait on a sick Redis).
PAUSE_AFTER_FAILURE = 5.0
#: A send to the same queue that starts within this many seconds of the previous one's end is part of a burst.
BURST_GAP = 0.003
#: Seconds a burst's further tokens are held to be pushed as one.
COALESCE = 0.1

_PUSH = """
redis.call('rpush', KEYS[1], ARGV[1])
redis.call('ltrim', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('pexpire', KEYS[1], ARGV[3])
return 1
"""

#: Pop tokens worth up to ARGV[1] messages (a token `n<k>` is worth k); a token worth more than
#: is needed goes back with the rest. Returns how many messages the popped tokens were worth.
_TAKE = """
local want = tonumber(ARGV[1])
local got = 0
while got < want do
  local token = redis.call('lpop', KEYS[1])
  if not token then break end
  local worth = tonumber(string.sub(token, 2)) or 1
  if got + worth > want then
    redis.call('lpush', KEYS[1], 'n' .. (got + worth - want))
    worth = want - got
  end
  got = got + worth
end
return got
"""

NOW_TOKEN = "n"


def token_worth(token: str) -> int:
    """How many messages an immediate token announces (`n`: one, `n<k>`: k)."""
    try:
        return max(1, int(token[1:])) if len(token) > 1 else 1
    except ValueError:
        return 1


@dataclass
class _Burst:
    """A sender's recent sends to one queue."""

    last_send: float = float("-inf")
    held: int = 0
    timer: threading.Timer | None = None


def due_token(at: float) -> str:
    """The token announcing a message that becomes visible at epoch `at`."""
    return f"@{at:.3f}"


def token_time(token: str) -> float | None:
    """The epoch a due token names, or None for an immediate token."""
    if token.startswith("@"):
        try:
            return float(token[1:])
        except ValueError:
            return None
    return None


_LIVE: weakref.WeakSet[WakeSignals] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    """Push the tokens every live sender still holds before the process exits."""
    for signals in list(_LIVE):
        signals.flush()


class WakeSignals:
    """Push, pop and discard wake-up tokens of a namespace's queues."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, nudge_key: str) -> None:
        self._client = client
        self._where = redis_endpoint(client)
        self.keys = keys
        self._push: Callable[..., Any] = client.register_script(_PUSH)
        self._take: Callable[..., Any] = client.register_script(_TAKE)
        self._bursts: dict[str, _Burst] = {}
        self._lock = threading.Lock()
        _LIVE.add(self)
        self._last_warning = float("-inf")
        self._paused_until = float("-inf")
        self.nudge_key = nudge_key

    def notify(self, queue: str, visible_at: float | None = None, coalesce: bool = True,
               began: float | None = None) -> None:
        """Announce a message sent to `queue`, visible now or at epoch `visible_at` (without
        `coalesce`, at once even within a burst); `began`: when the send started (monotonic
        seconds; default now), which tells a loop of sends from sends a task apart."""
        if time.monotonic() < self._paused_until:
            return
        if visible_at is not None:
            self._push_token(self.keys.due(queue), due_token(visible_at))
            return
        if not coalesce:
            self._push_token(self.keys.wake(queue), NOW_TOKEN)
            return
        now = time.monotonic()
        with self._lock:
            burst = self._bursts.setdefault(queue, _Burst())
            bursting = burst.held > 0 or (now if began is None else began) - burst.last_send < BURST_GAP
            burst.last_send = now
            if bursting:
                burst.held += 1
                if burst.timer is None:
                    burst.timer = threading.Timer(COALESCE, self._flush, args=(queue,))
                    burst.timer.daemon = True
                    burst.timer.start()
        if not bursting:
            self._push_token(self.keys.wake(queue), NOW_TOKEN)

    def announce(self, queue: str, count: int) -> None:
        """Push one token worth `count` messages of `queue` at once (e.g. handing back a surplus)."""
        if count > 0 and time.monotonic() >= self._paused_until:
            self._push_token(self.keys.wake(queue), NOW_TOKEN if count == 1 else f"n{count}")

    def _flush(self, queue: str) -> None:
        """Push the tokens a burst held, as one."""
        with self._lock:
            burst = self._bursts[queue]
            count, burst.held, burst.timer = burst.held, 0, None
        self.announce(queue, count)

    def flush(self) -> None:
        """Push every held token now (the connection closes)."""
        with self._lock:
            queues = [q for q, b in self._bursts.items() if b.timer is not None]
            for queue in queues:
                timer = self._bursts[queue].timer
                if timer is not None:
                    timer.cancel()
        for queue in queues:
            self._flush(queue)

    def _push_token(self, key: str, token: str) -> None:
        try:
            self._push(keys=[key], args=[token, MAX_TOKENS, TOKEN_TTL_MS])
        except redis.RedisError as exc:
            self._warn(exc)
            return
        OUTAGES.answered("Redis", self._where)

    def claim(self, queue: str, count: int) -> int:
        """Take tokens worth up to `count` messages of `queue` for a receive about to be made (so
        no other consumer wakes for the messages it will get); return what they were worth."""
        if count <= 0 or time.monotonic() < self._paused_until:
            return 0
        try:
            return int(self._take(keys=[self.keys.wake(queue)], args=[count]))
        except redis.RedisError as exc:
            self._warn(exc)
            return 0

    def discard(self, queue: str, count: int) -> None:
        """Drop tokens worth up to `count` messages of `queue` (their messages came in a batch)."""
        self.claim(queue, count)

    def nudge(self, key: str | None = None) -> None:
        """Interrupt this process's own blocking wait (a consumer was added, room opened) on
        `nudge_key` or on `key`."""
        if time.monotonic() < self._paused_until:
            return
        try:
            self._push(keys=[key or self.nudge_key], args=[NOW_TOKEN, 1, 10_000])
        except redis.RedisError as exc:
            self._warn(exc)

    def bindings_version(self) -> str | None:
        """The version of the Azure binding table (None: unknown, so re-list it)."""
        try:
            value = self._client.get(self.keys.bindings_version)
        except redis.RedisError as exc:
            self._warn(exc)
            return None
        return None if value is None else str(value)

    def bump_bindings(self) -> None:
        """Tell every process that the Azure binding table changed (they re-list it)."""
        try:
            self._client.incr(self.keys.bindings_version)
        except redis.RedisError as exc:
            self._warn(exc)

    def _warn(self, exc: Exception) -> None:
        """Log a Redis failure now and then, and pause signals: the messages are safe, only
        pick-up is slower."""
        now = time.monotonic()
        self._paused_until = now + PAUSE_AFTER_FAILURE
        if unanswered(exc):
            OUTAGES.failed("Redis", self._where, exc)
        elif now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            logger.warning("Redis wake-up signal failed (consumers fall back to polling): %r", exc)
