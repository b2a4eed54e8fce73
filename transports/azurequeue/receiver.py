"""The transport's I/O thread: it receives, so the consuming thread (a worker's event loop) never waits.

One `Receiver` per connection. It polls the consumed Azure queues when the `PollSchedule`
says so and only while their channel has prefetch room, holds every received message at once
(the lease keeper renews it from then on), keeps a message that came a little early (a delayed
message is made visible up to a second before it is due) until its due time, and puts
deliveries into the `Inbox`, which wakes the consuming thread. With Redis it waits in one
BLPOP on the wake-up and due tokens of its Azure queues and its own nudge list (the consuming
thread nudges it when a consumer is added or prefetch room opens) while some channel has room;
while none has, only an ack or reject can give it work, so it waits for that in the process
(no Redis command per ack; the tokens wait in Redis meanwhile). Without Redis it sleeps until
the next scheduled poll or a nudge. It also runs the periodic upkeep (queue heartbeats).

With Redis, a second thread owns the transient queues (control, replies, events): it keeps
them alive and waits in its own BLPOP on their lists and its nudge list. So a stalled Azure
request (an outage, a slow network) never holds up `celery inspect`, control, replies or
events, and never lets the worker's pidbox queue expire.

Batching: a channel that holds nothing polls as soon as it is woken (latency); one that
already holds messages waits until no more than a quarter of its prefetch is held (with
Celery's default multiplier of 4: only the running tasks) and lets a trickle gather for
`gather_seconds`, so a busy worker receives in batches (fewer requests), unless one Azure message
of the queue brings a whole prefetch (bundles). Bundles (several deliveries in one Azure message)
count as what they bring; a wait shorter than Redis's timer step is made in the process, not in
BLPOP. Parts beyond the room wait in the thread for up to `SPARE_SECONDS`: a part whose channel
gains room meanwhile (a short task ended) is delivered from there, at no request; the rest go back
to the queue, so a worker never keeps work it cannot start while another may be idle, and short
nodes do not bounce through the queue.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from .inbox import Inbox
from .outages import OUTAGES, redis_endpoint, unanswered
from .polling import PollSchedule
from .transient import TransientQueues, decode
from .wakeup import WakeSignals, token_time, token_worth

logger = logging.getLogger(__name__)

#: Longest single wait of an idle connection (each one is a Redis command). What must not wait
#: that long interrupts it: a stop, a consumer added or cancelled and prefetch room opening nudge
#: the thread, polls and due messages bound the wait, and the transient queues' thread waits no
#: longer than their next keep-alive.
MAX_WAIT = 5.0
#: Redis ends a blocking wait's timeout only at its next cron tick (`hz` 10: every 100 ms; measured:
#: a 20 ms BLPOP returned after 100-120 ms), so a shorter wait (a gather before a poll, a spare
#: part's give-back) is made in the process instead.
REDIS_TIMEOUT_STEP = 0.1
#: Seconds the thread keeps to polling alone after Redis failed.
REDIS_RETRY = 5.0
#: Seconds between two logs of the same failing loop.
ERROR_PAUSE = 1.0
#: A message due within this many seconds of now is delivered now.
DUE_SLACK = 0.002
#: Seconds a queue's largest bundle seen is remembered when sizing receives.
BUNDLE_MEMORY = 60.0
#: Seconds bundle parts received beyond a channel's room wait for room before going back to the
#: queue: long enough for a short task to end, short beside a long node's run.
SPARE_SECONDS = 0.1


class QoSView(Protocol):
    """What the receiver reads of a Kombu channel's QoS."""

    prefetch_count: int

    def can_consume_max_estimate(self) -> int | None: ...


@dataclass(frozen=True)
class Consumption:
    """One consumed queue: its channel (owner of deliveries), whether it lives in Redis, and
    whether its consumer acks (`no_ack`: a message is deleted as it is received)."""

    owner: Hashable
    qos: QoSView
    transient: bool
    no_ack: bool = False


@dataclass(frozen=True)
class Received:
    """A held message ready for delivery at `due` (epoch seconds; None: now)."""

    payload: dict[str, Any]
    due: float | None


class Source(Protocol):
    """What the receiver needs from its transport."""

    def consumption(self) -> dict[str, Consumption]: ...

    def receive_batch(self, queue: str, count: int, no_ack: bool) -> tuple[int, list[Received]]: ...

    def return_undelivered(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]: ...

    def upkeep(self, now: float) -> None: ...

    def transient_upkeep(self, now: float) -> float | None: ...


class Receiver:
    """Runs the receive loop of one connection on a daemon thread."""

    def __init__(
        self,
        source: Source,
        inbox: Inbox,
        schedule: PollSchedule,
        max_batch: int,
        gather_seconds: float,
        signals: WakeSignals | None = None,
        transient: TransientQueues | None = None,
        blocking: redis.Redis | None = None,
        bundle_size: int = 1,
    ) -> None:
        self._source = source
        self._inbox = inbox
        self._schedule = schedule
        self._max_batch = max_batch
        self._gather = gather_seconds
        self._signals = signals
        self._transient = transient
        self._blocking = blocking
        self._redis_where = redis_endpoint(blocking) if blocking is not None else ""
        self._timed: list[tuple[float, int, str, Hashable, dict[str, Any]]] = []
        self._timed_owned: dict[Hashable, int] = {}
        #: Parts received beyond their channel's room: (give back at, queue, owner, parts) per receive.
        self._spare: list[tuple[float, str, Hashable, list[Received]]] = []
        self._seq = itertools.count()
        self._taken: dict[str, int] = {}
        self._bundle_size = bundle_size
        self._per_message: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._stop = threading.Event()
        self._starving: set[Hashable] = set()
        self._redis_down_until = 0.0
        #: Whether the loop waits in BLPOP (so an interrupt must nudge it through Redis).
        self._in_blpop = False
        self._thread: threading.Thread | None = None
        self._transient_thread: threading.Thread | None = None
        self._transient_nudge = f"{signals.nudge_key}:transient" if signals is not None else ""

    def start(self) -> None:
        """Start the thread (once), and the transient queues' thread with Redis."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="azurequeue-receiver", daemon=True)
            self._thread.start()
        if self._transient_thread is None and self._transient is not None and self._blocking is not None:
            self._transient_thread = threading.Thread(
                target=self._run_transient, name="azurequeue-transient", daemon=True)
            self._transient_thread.start()

    def wake(self, queue: str | None = None) -> None:
        """Interrupt the wait: poll `queue` at once (if given) and re-read what is consumed."""
        if queue is not None:
            with self._lock:
                self._schedule.wake(queue, time.monotonic())
        self._interrupt()

    def wake_transient(self) -> None:
        """Interrupt the transient queues' wait: the set of consumed transient queues changed."""
        if self._signals is not None and self._transient_thread is not None:
            self._signals.nudge(self._transient_nudge)

    def room_opened(self, owner: Hashable) -> None:
        """The consuming thread acked or rejected: interrupt the wait if `owner` lacked room."""
        with self._lock:
            if owner not in self._starving:
                return
            self._starving.discard(owner)
        self._interrupt()

    def forget(self, queue: str) -> None:
        """Stop scheduling a queue no longer consumed."""
        with self._lock:
            self._schedule.forget(queue)

    def stop(self) -> list[dict[str, Any]]:
        """Stop the thread and return the payloads it still held for later delivery."""
        self._stop.set()
        self._interrupt()
        self.wake_transient()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        transient, self._transient_thread = self._transient_thread, None
        if transient is not None and transient is not threading.current_thread():
            transient.join(timeout=MAX_WAIT + 2)
        with self._lock:
            held = [entry[4] for entry in self._timed]
            self._timed.clear()
            self._timed_owned.clear()
        held.extend(item.payload for _, _, _, parts in self._spare for item in parts)
        self._spare.clear()
        return held

    def _interrupt(self) -> None:
        """Wake the loop: its event, and a nudge only while it waits (or is about to) in BLPOP."""
        self._event.set()
        if self._in_blpop and self._signals is not None and self._blocking is not None and self._redis_ok():
            self._signals.nudge()

    def _redis_ok(self) -> bool:
        return self._blocking is not None and time.monotonic() >= self._redis_down_until

    def _run(self) -> None:
        """Loop until stopped; an error pauses the loop briefly and is logged, never fatal."""
        while not self._stop.is_set():
            try:
                self._step()
            except redis.RedisError as exc:
                self._redis_failed(exc)
                logger.debug("Redis failed; polling Azure only for %.0f s: %r", REDIS_RETRY, exc)
                self._redis_down_until = time.monotonic() + REDIS_RETRY
                with self._lock:
                    self._schedule.signalled = False
            except Exception as exc:
                logger.log(logging.DEBUG if unanswered(exc) else logging.ERROR,
                           "Receiving from Azure Queue Storage failed, retrying: %r", exc)
                self._stop.wait(ERROR_PAUSE)

    def _redis_failed(self, exc: Exception) -> None:
        """Tell the outage log (a connection failure) or the log (anything else) of a Redis failure."""
        if unanswered(exc):
            OUTAGES.failed("Redis", self._redis_where, exc)
        else:
            logger.warning("Redis failed: %r", exc)

    def _redis_answered(self) -> None:
        OUTAGES.answered("Redis", self._redis_where)

    def room(self, consumption: Consumption) -> int:
        """How many more messages the channel may take now (its prefetch room, capped).

        What waits here is read before the channel's count: the consuming thread moves a
        delivery into that count before it stops counting here, so a delivery moving meanwhile
        is counted twice (less room, harmless), never in neither (more than the prefetch)."""
        pending = self._inbox.pending(consumption.owner) + self._timed_owned.get(consumption.owner, 0)
        estimate = consumption.qos.can_consume_max_estimate()
        if estimate is None:
            return self._max_batch
        return max(0, min(self._max_batch, estimate - pending))

    def _eligible(self, consumption: Consumption) -> int:
        """The batch to receive for this channel now (0: none, also while it has spare parts),
        keeping busy channels batched."""
        if any(owner == consumption.owner for _, _, owner, _ in self._spare):
            return 0
        room = self.room(consumption)
        prefetch = consumption.qos.prefetch_count or 0
        if room and prefetch and room < prefetch - max(1, prefetch // 4):
            return 0
        return room

    def _holds(self, consumption: Consumption) -> bool:
        """Whether the channel already holds messages (busy: no hurry to poll)."""
        pending = self._inbox.pending(consumption.owner) + self._timed_owned.get(consumption.owner, 0)
        room = consumption.qos.can_consume_max_estimate()
        prefetch = consumption.qos.prefetch_count or 0
        return pending > 0 or (room is not None and room < prefetch)

    def _gathers(self, queue: str, consumption: Consumption, now: float) -> bool:
        """Whether a woken poll of `queue` waits `gather_seconds` first: only while the channel
        holds messages and one Azure message brings fewer deliveries than its prefetch (when one
        bundle fills the prefetch, waiting would save no request, only delay the work)."""
        prefetch = consumption.qos.prefetch_count or 0
        if prefetch and self._deliveries_per_message(queue, now) >= prefetch:
            return False
        return self._holds(consumption)

    def _step(self) -> None:
        """One turn: upkeep, due deliveries, one due poll or one wait."""
        now = time.monotonic()
        if self._signals is not None and not self._schedule.signalled and self._redis_ok():
            with self._lock:
                self._schedule.signalled = True
        self._source.upkeep(now)
        self._release_due()
        table = self._source.consumption()
        azure = {q: c for q, c in table.items() if not c.transient}
        self._place_spare(azure, now)
        with self._lock:  # with `room_opened`: an ack right after the room was read still interrupts
            batches = {q: self._eligible(c) for q, c in azure.items()}
            ready = [q for q, n in batches.items() if n > 0]
            self._starving = {c.owner for q, c in azure.items() if batches[q] == 0}
            passed = [q for q in azure if q not in ready and self._schedule.take_expected(q, now)]
            due = self._schedule.due(ready, now) if ready else None
            wake_at = self._schedule.next_time(ready) if ready else now + MAX_WAIT
            expected = self._schedule.next_expected([q for q in azure if q not in ready])
            if expected is not None:  # a queue without room notices a passed expected poll (`passed`)
                wake_at = min(wake_at, expected)
        for queue in passed:
            if self._signals is not None:
                self._signals.notify(queue)
        if due is not None:
            self._poll(due, azure[due], batches[due])
            return
        if self._timed:
            wake_at = min(wake_at, now + max(0.0, self._timed[0][0] - time.time()))
        if self._spare:
            wake_at = min(wake_at, min(at for at, _, _, _ in self._spare))
        timeout = min(MAX_WAIT, max(0.0, wake_at - now))
        if self._signals is not None and self._redis_ok() and ready and timeout >= REDIS_TIMEOUT_STEP:
            self._wait_redis(table, azure, ready, timeout)
        elif self._event.wait(timeout):  # no channel has room: only an ack (or a stop) matters now
            self._event.clear()

    def _wait_redis(
        self, table: dict[str, Consumption], azure: dict[str, Consumption], ready: list[str], timeout: float
    ) -> None:
        """Block in BLPOP on everything that can wake this connection, up to `timeout`."""
        assert self._signals is not None and self._blocking is not None
        signals = self._signals
        keys: dict[str, tuple[str, str]] = {}
        for queue in azure:
            keys[signals.keys.due(queue)] = ("due", queue)
        for queue in ready:
            keys[signals.keys.wake(queue)] = ("wake", queue)
        keys[signals.nudge_key] = ("nudge", "")
        if timeout < 0.001:
            return
        self._in_blpop = True  # from here on `_interrupt` nudges; what it set before is seen now
        try:
            if self._event.is_set():
                self._event.clear()
                return
            popped = self._blocking.blpop(list(keys), timeout=timeout)
        finally:
            self._in_blpop = False
        self._redis_answered()
        if popped is None:
            return
        key, value = (_text(part) for part in popped)
        kind, queue = keys.get(key, ("nudge", ""))
        now = time.monotonic()
        if kind == "wake":
            consumption = azure[queue]
            with self._lock:
                self._taken[queue] = self._taken.get(queue, 0) + token_worth(value)
                self._schedule.wake(queue, now + (self._gather if self._gathers(queue, consumption, now) else 0.0))
        elif kind == "due":
            at = token_time(value)
            if at is not None:
                with self._lock:
                    self._schedule.expect(queue, now + max(0.0, at - time.time()) + DUE_SLACK)

    def _run_transient(self) -> None:
        """The transient queues' loop: keep them alive, deliver what their lists receive."""
        while not self._stop.is_set():
            try:
                self._step_transient()
            except redis.RedisError as exc:
                self._redis_failed(exc)
                logger.debug("Redis failed; control, reply and event queues wait %.0f s: %r", REDIS_RETRY, exc)
                self._stop.wait(REDIS_RETRY)
            except Exception as exc:
                logger.error("Receiving from transient queues failed, retrying: %r", exc)
                self._stop.wait(ERROR_PAUSE)

    def _step_transient(self) -> None:
        """One turn of the transient loop: upkeep, then one BLPOP of up to MAX_WAIT, no longer
        than until the next keep-alive is due."""
        assert self._transient is not None and self._blocking is not None
        keepalive_in = self._source.transient_upkeep(time.monotonic())
        table = {q: c for q, c in self._source.consumption().items() if c.transient}
        keys = {self._transient.keys.messages(queue): queue for queue in table}
        timeout = MAX_WAIT if keepalive_in is None else min(MAX_WAIT, max(0.01, keepalive_in))
        popped = self._blocking.blpop([*keys, self._transient_nudge], timeout=timeout)
        self._redis_answered()
        if popped is None or self._stop.is_set():
            return
        key, value = (_text(part) for part in popped)
        queue = keys.get(key)
        if queue is not None:
            self._deliver_transient(queue, table[queue], value)

    def _deliver_transient(self, queue: str, consumption: Consumption, text: str) -> None:
        """Hand a message popped from a transient queue to the inbox."""
        try:
            payload = decode(text)
        except ValueError as exc:
            logger.error("Dropping an unreadable message of transient queue %r: %r", queue, exc)
            return
        if payload is None:
            logger.debug("Dropped an expired message of transient queue %r", queue)
            return
        self._inbox.put(queue, payload, consumption.owner)

    def _poll(self, queue: str, consumption: Consumption, room: int) -> None:
        """Receive one batch from an Azure queue and queue its deliveries; with signals, claim
        the batch's tokens first and drop those of messages received beyond them after.

        `room` counts deliveries; a bundle brings several, so the batch asks for as many Azure
        messages as fill the room at the most deliveries per message the queue brought in the
        last `BUNDLE_MEMORY` seconds (at first: `bundle_size`), so a fan-out sent in bundles is
        not hoarded by the first worker to receive."""
        per_message = self._deliveries_per_message(queue, time.monotonic())
        count = max(1, min(room, math.ceil(room / per_message)))
        with self._lock:
            taken = self._taken.pop(queue, 0)
        signalled = self._signals is not None and self._redis_ok()
        if signalled and self._signals is not None:
            taken += self._signals.claim(queue, count - taken)
        received, held = self._source.receive_batch(queue, count, consumption.no_ack)
        now = time.monotonic()
        if received:
            observed = max(1.0, len(held) / received)
            if queue not in self._per_message or observed >= self._deliveries_per_message(queue, now):
                self._per_message[queue] = (observed, now)
        with self._lock:
            if received:
                # a full batch may have left more behind, unless signals covered all it brought
                # (a further message's token then wakes this loop: no empty receive to find out)
                more = received >= count and not (signalled and received <= taken)
                self._schedule.got_messages(queue, now, full=more)
            else:
                self._schedule.was_empty(queue, now)
        if signalled and self._signals is not None:
            if received > taken:
                self._signals.discard(queue, received - taken)
            elif received >= count and taken > received:
                self._signals.announce(queue, taken - received)
        self._deliver(queue, consumption.owner, held[:room])
        if len(held) > room:
            self._spare.append((now + SPARE_SECONDS, queue, consumption.owner, held[room:]))

    def _deliver(self, queue: str, owner: Hashable, items: list[Received]) -> None:
        """Queue held messages for the consuming thread: now, or at their due time."""
        wall = time.time()
        for item in items:
            if item.due is not None and item.due > wall + DUE_SLACK:
                with self._lock:
                    heapq.heappush(self._timed, (item.due, next(self._seq), queue, owner, item.payload))
                    self._timed_owned[owner] = self._timed_owned.get(owner, 0) + 1
            else:
                self._inbox.put(queue, item.payload, owner)

    def _place_spare(self, azure: dict[str, Consumption], now: float) -> None:
        """Deliver spare parts to channels that gained room; give back those whose wait is over
        (or whose channel no longer consumes the queue): bundle parts return to the queue together,
        whole messages (a receive never asks for more of them than the room) are delivered anyway,
        as a message received for a cancelled consumer is."""
        waiting: list[tuple[float, str, Hashable, list[Received]]] = []
        for at, queue, owner, parts in self._spare:
            consumption = azure.get(queue)
            consumed = consumption is not None and consumption.owner == owner
            if consumed and consumption is not None:
                room = self.room(consumption)
                self._deliver(queue, owner, parts[:room])
                parts = parts[room:]
            if parts and consumed and at > now:
                waiting.append((at, queue, owner, parts))
            elif parts:
                by_id = {id(item.payload): item for item in parts}
                kept = self._source.return_undelivered([item.payload for item in parts])
                self._deliver(queue, owner, [by_id[id(payload)] for payload in kept])
        self._spare = waiting

    def _deliveries_per_message(self, queue: str, now: float) -> float:
        """Deliveries an Azure message of `queue` may bring: the most seen lately, else 1."""
        seen = self._per_message.get(queue)
        if seen is None:
            return float(self._bundle_size)
        per_message, at = seen
        return per_message if now - at <= BUNDLE_MEMORY else 1.0

    def _release_due(self) -> None:
        """Deliver the messages kept until their due time once it has come."""
        wall = time.time()
        while True:
            with self._lock:
                if not self._timed or self._timed[0][0] > wall + DUE_SLACK:
                    return
                _, _, queue, owner, payload = heapq.heappop(self._timed)
                self._timed_owned[owner] -= 1
            self._inbox.put(queue, payload, owner)


def _text(value: Any) -> str:
    """Decode a Redis reply part."""
    return value.decode() if isinstance(value, bytes) else str(value)
