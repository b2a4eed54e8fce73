"""The azurequeue transport with Redis: wake-up signals and transient queues, against Azurite and Redis."""

from __future__ import annotations

import contextlib
import os
import time
from datetime import UTC, datetime, timedelta

import redis
from azure.storage.queue import QueueServiceClient
from kombu import Connection, Consumer, Exchange, Message, Producer, Queue

from tests.integration.transports.transport_support import connection
from transports.azurequeue.stats import STATS


def with_redis(prefix: str, **options: object) -> Connection:
    """A connection under `prefix` whose transport uses the test Redis."""
    return connection(prefix, redis_url=os.environ["REDIS_URL"], **options)


def azure_queues(prefix: str) -> set[str]:
    """The Azure queues that exist under `prefix`."""
    service = QueueServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
    return {q.name for q in service.list_queues(name_starts_with=prefix.lower())}


def redis_keys(prefix: str) -> list[str]:
    """The transient queue keys left in Redis under `prefix`."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
    return [*client.scan_iter(f"azurequeue:{prefix}alive:*"), *client.scan_iter(f"azurequeue:{prefix}q:*")]


def drain_until(conn: Connection, done: object, seconds: float) -> None:
    """Drain events until `done()` is true or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:  # type: ignore[operator]
        with contextlib.suppress(TimeoutError):
            conn.drain_events(timeout=0.5)


def test_transient_queues_route_fanout_topic_and_direct_through_redis_and_leave_with_the_connection(
    unique_prefix: str,
) -> None:
    fan, topic, reply = Exchange("fx", "fanout"), Exchange("tx", "topic"), Exchange("rx", "direct")
    queues = [
        Queue("pidbox-a", fan, auto_delete=True, expires=10),
        Queue("events-a", topic, routing_key="task.#", auto_delete=True),
        Queue("reply-a", reply, routing_key="me", auto_delete=True, expires=10),
    ]
    got: list[str] = []
    owner = with_redis(unique_prefix)
    with with_redis(unique_prefix) as publisher:

        def on_message(body: str, message: Message) -> None:
            got.append(body)

        consumer = Consumer(owner, queues, callbacks=[on_message], no_ack=True)
        consumer.consume()
        producer = Producer(publisher.channel())
        producer.publish("to all", exchange=fan, declare=[fan])
        producer.publish("a task event", exchange=topic, routing_key="task.sent", declare=[topic])
        producer.publish("not for us", exchange=topic, routing_key="worker.heartbeat")
        producer.publish("a reply", exchange=reply, routing_key="me", declare=[reply])
        drain_until(owner, lambda: len(got) >= 3, 10)
        assert sorted(got) == ["a reply", "a task event", "to all"]
        assert azure_queues(unique_prefix) == set()
        assert len(redis_keys(unique_prefix)) >= 3
        consumer.cancel()
        owner.close()
        assert redis_keys(unique_prefix) == []
        producer.publish("after the end", exchange=fan)
        assert redis_keys(unique_prefix) == []


def test_idle_consumer_wakes_on_a_signal_in_under_a_second_without_polling_more(unique_prefix: str) -> None:
    with with_redis(unique_prefix, max_polling_interval=8.0) as conn:
        queue = Queue("wakes")
        got: list[float] = []
        with Consumer(conn, [queue], callbacks=[lambda body, m: (got.append(time.monotonic()), m.ack())]):
            drain_until(conn, lambda: False, 2)
            before = STATS.snapshot().get("queue.receive", 0)
            drain_until(conn, lambda: False, 6)
            idle_polls = STATS.snapshot().get("queue.receive", 0) - before
            with with_redis(unique_prefix) as other:  # a sender only: a SimpleQueue would consume too
                producer = Producer(other.default_channel)
                sent = time.monotonic()
                producer.publish("wake up", exchange="", routing_key="wakes")
            drain_until(conn, lambda: got, 10)
        queue(conn.default_channel).delete()
    assert idle_polls <= 1, f"{idle_polls} receives in 6 s idle"
    assert got and got[0] - sent < 1.0, f"picked up after {got[0] - sent:.3f} s"


def test_delayed_message_arrives_at_its_due_time_not_before(unique_prefix: str) -> None:
    with with_redis(unique_prefix) as conn:
        queue = conn.SimpleQueue("due")
        eta = datetime.now(UTC) + timedelta(seconds=2.5)
        queue.put("due", headers={"eta": eta.isoformat()})
        message = queue.get(timeout=15)
        late = (datetime.now(UTC) - eta).total_seconds()
        message.ack()
        queue.queue.delete()
    assert 0 <= late < 1.0, f"delivered {late:+.3f} s from its due time"
