"""Wake-up tokens over Redis: tell one idle consumer that an Azure queue has a message.

Azure Queue Storage has no long polling, so without a signal a consumer either polls often
(requests cost money) or notices work late. After sending a message the sender pushes a token
onto the queue's Redis list `<ns>wake:<queue>`; consumers wait on those lists with one BLPOP,
so exactly one consumer with room wakes per token and polls Azure at once. A consumer that
receives k messages for one token drops k-1 further tokens. A delayed message (countdown,
retry) pushes `@<epoch>`, the time it becomes visible, onto `<ns>due:<queue>`; the consumer
that pops it polls at that time. Tokens are hints: a lost one (Redis down, a sender without
Redis) only means the message waits for the consumer's safety-net poll.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

logger = logging.getLogger(__name__)

#: Tokens kept per queue; a longer backlog is found by polling (a full batch polls again).
MAX_TOKENS = 1000
#: Tokens live this long without a consumer to pop them (the safety-net poll covers the rest).
TOKEN_TTL_MS = 60_000
#: Seconds between two warnings about Redis being unreachable from the sending side.
WARN_EVERY = 30.0
#: Seconds a sender skips signals after Redis failed (a send must not wait on a sick Redis).
PAUSE_AFTER_FAILURE = 5.0

_PUSH = """
redis.call('rpush', KEYS[1], ARGV[1])
redis.call('ltrim', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('pexpire', KEYS[1], ARGV[3])
return 1
"""

NOW_TOKEN = "n"


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


class WakeSignals:
    """Push, pop and discard wake-up tokens of a namespace's queues."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._client = client
        self.namespace = namespace
        self._push: Callable[..., Any] = client.register_script(_PUSH)
        self._last_warning = float("-inf")
        self._paused_until = float("-inf")
        self.nudge_key = f"{namespace}nudge:{uuid.uuid4().hex}"

    def wake_key(self, queue: str) -> str:
        """The list of immediate tokens of Kombu queue `queue`."""
        return f"{self.namespace}wake:{queue}"

    def due_key(self, queue: str) -> str:
        """The list of due tokens of Kombu queue `queue`."""
        return f"{self.namespace}due:{queue}"

    def notify(self, queue: str, visible_at: float | None = None) -> None:
        """Announce a message sent to `queue`, visible now or at epoch `visible_at`."""
        if time.monotonic() < self._paused_until:
            return
        if visible_at is None:
            key, token = self.wake_key(queue), NOW_TOKEN
        else:
            key, token = self.due_key(queue), due_token(visible_at)
        try:
            self._push(keys=[key], args=[token, MAX_TOKENS, TOKEN_TTL_MS])
        except redis.RedisError as exc:
            self._warn(exc)

    def discard(self, queue: str, count: int) -> None:
        """Drop up to `count` immediate tokens of `queue` (their messages came in one batch)."""
        if count <= 0 or time.monotonic() < self._paused_until:
            return
        try:
            self._client.lpop(self.wake_key(queue), count)
        except redis.RedisError as exc:
            self._warn(exc)

    def nudge(self) -> None:
        """Interrupt this process's own blocking wait (a consumer was added, room opened)."""
        if time.monotonic() < self._paused_until:
            return
        try:
            self._push(keys=[self.nudge_key], args=[NOW_TOKEN, 1, 10_000])
        except redis.RedisError as exc:
            self._warn(exc)

    def bindings_version(self) -> str | None:
        """The version of the Azure binding table (None: unknown, so re-list it)."""
        try:
            value = self._client.get(f"{self.namespace}bindings-version")
        except redis.RedisError as exc:
            self._warn(exc)
            return None
        return None if value is None else str(value)

    def bump_bindings(self) -> None:
        """Tell every process that the Azure binding table changed (they re-list it)."""
        try:
            self._client.incr(f"{self.namespace}bindings-version")
        except redis.RedisError as exc:
            self._warn(exc)

    def _warn(self, exc: Exception) -> None:
        """Log a Redis failure now and then, and pause signals: the messages are safe, only
        pick-up is slower."""
        now = time.monotonic()
        self._paused_until = now + PAUSE_AFTER_FAILURE
        if now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            logger.warning("Redis wake-up signal failed (consumers fall back to polling): %r", exc)
