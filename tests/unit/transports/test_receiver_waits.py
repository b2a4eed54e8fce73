"""When the I/O thread polls after a wake-up signal, and where it waits until then."""

from __future__ import annotations

import time
from typing import Any

import fakeredis

from transports.azurequeue.inbox import Inbox
from transports.azurequeue.polling import PollSchedule
from transports.azurequeue.receiver import REDIS_TIMEOUT_STEP, Consumption, Received, Receiver
from transports.azurequeue.redisside import RedisKeys
from transports.azurequeue.wakeup import WakeSignals

QUEUE = "nodes"
GATHER = 0.5


class RunningQoS:
    """A channel running one task: `running` unacked deliveries of its prefetch."""

    def __init__(self, prefetch: int, running: int = 1) -> None:
        self.prefetch_count = prefetch
        self.running = running

    def can_consume_max_estimate(self) -> int:
        return self.prefetch_count - self.running


class BundleSource:
    """A queue whose every Azure message is a bundle of `parts` deliveries; records receives."""

    def __init__(self, qos: RunningQoS, parts: int) -> None:
        self.qos = qos
        self.parts = parts
        self.sent = 0
        self.receives: list[int] = []

    def consumption(self) -> dict[str, Consumption]:
        return {QUEUE: Consumption("channel", self.qos, transient=False)}

    def send(self, signals: WakeSignals) -> None:
        """A sender puts one message on the queue and signals it."""
        self.sent += 1
        signals.notify(QUEUE)

    def receive_batch(self, queue: str, count: int, no_ack: bool) -> tuple[int, list[Received]]:
        got = min(count, self.sent)
        self.sent -= got
        if got:
            self.receives.append(got)
        return got, [Received({"part": i}, None) for i in range(got * self.parts)]

    def return_undelivered(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return []

    def upkeep(self, now: float) -> None:
        return None

    def transient_upkeep(self, now: float) -> float | None:
        return None


class RecordingRedis(fakeredis.FakeRedis):
    """fakeredis that records the timeout of every BLPOP."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.blpop_timeouts: list[float] = []

    def blpop(self, keys: Any, timeout: Any = 0) -> Any:
        self.blpop_timeouts.append(float(timeout))
        return super().blpop(keys, timeout=timeout)


def receiver_for(prefetch: int, parts: int) -> tuple[Receiver, BundleSource, RecordingRedis, WakeSignals]:
    server = fakeredis.FakeServer()
    client = RecordingRedis(server=server)
    keys = RedisKeys("t:")
    signals = WakeSignals(client, keys, keys.nudge("me"))
    source = BundleSource(RunningQoS(prefetch), parts)
    receiver = Receiver(source, Inbox(), PollSchedule(0.1, 8.0, signalled=True), 32, GATHER,
                        signals=signals, blocking=client, bundle_size=parts)
    receiver._step()  # the first poll finds the queue empty: from now on it waits for signals
    client.blpop_timeouts.clear()
    return receiver, source, client, signals


def step_until_received(receiver: Receiver, source: BundleSource, seconds: float) -> float:
    """Run the I/O thread's turns until it receives (or `seconds` pass); return the time taken."""
    started = time.monotonic()
    while not source.receives and time.monotonic() - started < seconds:
        receiver._step()
    return time.monotonic() - started


def test_a_busy_consumer_woken_for_bundles_that_fill_its_prefetch_receives_at_once() -> None:
    receiver, source, _, signals = receiver_for(prefetch=2, parts=4)
    source.send(signals)
    taken = step_until_received(receiver, source, 2 * GATHER)
    assert source.receives == [1]
    assert taken < GATHER / 2, f"the poll waited {taken:.3f} s for a gather a bundle cannot improve"


def test_a_busy_consumer_woken_for_single_messages_gathers_before_it_receives() -> None:
    receiver, source, _, signals = receiver_for(prefetch=8, parts=1)
    source.send(signals)
    taken = step_until_received(receiver, source, 3 * GATHER)
    assert source.receives, "the woken consumer never received"
    assert taken >= GATHER * 0.9, f"the busy consumer polled after {taken:.3f} s instead of gathering"


def test_a_wait_shorter_than_the_redis_timer_step_is_made_in_the_process() -> None:
    """Redis ends a BLPOP's timeout only at its cron tick (100 ms by default), so a 20 ms gather
    made in BLPOP would last 100 ms."""
    receiver, source, client, signals = receiver_for(prefetch=8, parts=1)
    receiver._gather = 0.02
    source.send(signals)
    step_until_received(receiver, source, 1.0)
    assert source.receives
    assert client.blpop_timeouts, "the consumer never waited for a signal"
    assert min(client.blpop_timeouts) >= REDIS_TIMEOUT_STEP, client.blpop_timeouts
