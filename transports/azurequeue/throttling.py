"""Throttling is back-pressure: the Storage retry policy, and one log line per throttling episode.

Azure Queue Storage answers ``503 ServerBusy`` or ``500 OperationTimedOut`` when a queue passes
about 2,000 messages/s or an account about 20,000 requests/s; Cosmos DB answers ``429`` with
``x-ms-retry-after-ms`` when a partition passes its RU/s. Both are normal under load.

* `BackPressureRetry`: the Storage SDK's retry policy as this transport configures it. The SDK's
  default (`ExponentialRetry`: 15 s, then 18 s, then 24 s) turns a 10 % throttling rate into a
  15x slower workflow; this one waits ``retry_first_backoff`` (0.25 s) before the first retry,
  doubling up to ``retry_max_backoff`` (4 s), each wait drawn from its upper half (jitter, so
  throttled clients do not retry in step), and never less than a ``Retry-After`` the service sent.
  Up to ``retry_total`` (10) retries of one request: about 30 s of a service saying no before the
  error reaches the caller (who then treats it as an outage: retried later, never a node failure).
* `ThrottleWatch`: sees every HTTP attempt's answer (the counting transports call it) and logs a
  WARNING when a service starts throttling this process and an INFO line with the counts when it
  has answered normally again for ``quiet_seconds``: one pair of lines per episode, not one per
  request. `THROTTLES` counts throttled answers by service and kind for metrics.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from azure.storage.queue import ExponentialRetry

logger = logging.getLogger("transports.azurequeue.throttling")

#: Defaults of the transport options `retry_first_backoff`, `retry_max_backoff`, `retry_total`.
FIRST_BACKOFF = 0.25
MAX_BACKOFF = 4.0
RETRY_TOTAL = 10
#: Retries of a request whose answer never came (a hung or reset connection after sending): each
#: waits out the read timeout first, so few (a hung service is an outage, not throttling).
READ_RETRIES = 3
#: Seconds of normal answers after which a throttling episode counts as over.
QUIET_SECONDS = 30.0

#: Storage error codes that mean "too busy now" (with a 500 or 503).
_STORAGE_BUSY_CODES = frozenset({"ServerBusy", "OperationTimedOut", "InternalError"})


class BackPressureRetry(ExponentialRetry):
    """Storage retries for throttling: short, capped, jittered exponential back-off (see module doc)."""

    def __init__(self, first: float = FIRST_BACKOFF, cap: float = MAX_BACKOFF, total: int = RETRY_TOTAL) -> None:
        super().__init__(initial_backoff=0, increment_base=2, retry_total=total, random_jitter_range=0,
                         retry_status=total, retry_connect=total, retry_read=min(total, READ_RETRIES))
        self.first = first
        self.cap = cap

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        """Wait before retry number `settings["count"]` (1 for the first retry)."""
        count = max(1, int(settings.get("count", 1)))
        ceiling = min(self.cap, self.first * 2 ** (count - 1))
        wait = random.uniform(ceiling / 2, ceiling)
        history = settings.get("history") or []
        response = getattr(history[-1], "http_response", None) if history else None
        retry_after = _retry_after_seconds(response.headers) if response is not None else None
        return max(wait, retry_after) if retry_after is not None else wait

    def describe(self) -> str:
        """The policy in words, for logs."""
        return f"back-off {self.first:g} s doubling to {self.cap:g} s, up to {self.total_retries} retries"


def _retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The wait a response asked for (`x-ms-retry-after-ms` or `Retry-After` seconds), if any."""
    for name, scale in (("x-ms-retry-after-ms", 0.001), ("retry-after-ms", 0.001), ("Retry-After", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


def storage_throttle_kind(status: int, headers: Mapping[str, str]) -> str | None:
    """What kind of throttling a Storage answer is (`503 ServerBusy`, ...), or None."""
    if status in (500, 503):
        code = headers.get("x-ms-error-code") or ""
        if status == 503 or code in _STORAGE_BUSY_CODES:
            return f"{status} {code}".strip()
    return None


def cosmos_throttle_kind(status: int, headers: Mapping[str, str]) -> str | None:
    """What kind of throttling or transient refusal a Cosmos answer is (`429`, `408`, `503`), or None."""
    if status in (429, 408, 503):
        sub = headers.get("x-ms-substatus")
        return f"{status}/{sub}" if sub and sub != "0" else str(status)
    return None


class ThrottleCounts:
    """Process-wide counters of throttled answers, `<service>|<kind>` -> count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total: Counter[str] = Counter()
        self._undrained: Counter[str] = Counter()

    def add(self, key: str) -> None:
        """Count one throttled answer."""
        with self._lock:
            self._total[key] += 1
            self._undrained[key] += 1

    def snapshot(self) -> dict[str, int]:
        """Every count since the process started."""
        with self._lock:
            return dict(self._total)

    def add_undrained(self, key: str) -> None:
        """Put back one count a drain took but could not report."""
        with self._lock:
            self._undrained[key] += 1

    def drain(self) -> dict[str, int]:
        """The counts since the last drain (for a process pushing them to shared metrics)."""
        with self._lock:
            counts = dict(self._undrained)
            self._undrained.clear()
            return counts


#: Throttled answers seen by this process, by service and kind.
THROTTLES = ThrottleCounts()


class ThrottleWatch:
    """One service's throttling episodes in this process: logged when they start and end."""

    def __init__(self, service: str, policy: str, quiet_seconds: float = QUIET_SECONDS,
                 counts: ThrottleCounts = THROTTLES, log: logging.Logger = logger) -> None:
        self.service = service
        self.policy = policy
        self.quiet_seconds = quiet_seconds
        self._counts = counts
        self._log = log
        self._lock = threading.Lock()
        self._episode: Counter[str] = Counter()
        self._started = 0.0
        self._last = float("-inf")

    def throttled(self, kind: str) -> None:
        """Note a throttled answer: the first after a quiet time is logged."""
        self._counts.add(f"{self.service}|{kind}")
        now = time.monotonic()
        with self._lock:
            starts = not self._episode
            self._episode[kind] += 1
            self._last = now
            if starts:
                self._started = now
        if starts:
            self._log.warning("%s is throttling (%s): requests are retried with %s; this is back-pressure, "
                              "not a failure (one line per episode, see docs/azure.md)", self.service, kind,
                              self.policy)

    def answered(self) -> None:
        """Note a normal answer: ends an episode quiet for `quiet_seconds` (logged with its counts)."""
        if not self._episode:
            return
        now = time.monotonic()
        with self._lock:
            if not self._episode or now - self._last < self.quiet_seconds:
                return
            episode, self._episode = self._episode, Counter()
            lasted = self._last - self._started
        kinds = ", ".join(f"{kind}: {n}" for kind, n in episode.most_common())
        self._log.info("%s throttling ended: %d throttled answers over %.0f s (%s)", self.service,
                       sum(episode.values()), lasted, kinds)
