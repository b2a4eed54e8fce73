"""Delivery through a whole Kombu connection over fake Azure and fake Redis: once, in batches,
woken by tokens, poison and over-delivered messages dead-lettered with their reason."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
from kombu import Connection, Exchange, Queue
from kombu.message import Message

import transports  # noqa: F401  (registers azurequeue://)
from tests.unit.transports.fakes import FakeServices

WORK = Queue("work", Exchange("jobs", "direct"), "work")


def connect(**options: Any) -> Connection:
    """A connection to the fake services; the safety-net poll is 30 s, so only a wake-up is fast."""
    return Connection("azurequeue://", transport_options={
        "queue_name_prefix": "t-", "redis_url": "redis://fake", "polling_interval": 0.01,
        "max_polling_interval": 30, **options})


def drain(conn: Connection, got: list[Any], want: int, timeout: float = 3.0) -> None:
    """Deliver until `want` messages arrived or `timeout` passed."""
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            conn.drain_events(timeout=0.1)


def acking(got: list[Any]) -> Any:
    def callback(body: Any, message: Message) -> None:
        got.append(body)
        message.ack()
    return callback


def test_a_published_message_wakes_the_consumer_is_delivered_once_and_deleted_on_ack(
        fake_services: FakeServices) -> None:
    got: list[Any] = []
    with connect() as conn, conn.Consumer(WORK, callbacks=[acking(got)]):
        conn.Producer().publish({"n": 1}, exchange=WORK.exchange, routing_key="work", declare=[WORK])
        started = time.monotonic()
        drain(conn, got, 1)
        took = time.monotonic() - started
        drain(conn, got, 2, timeout=0.3)
        conn.transport.keeper.flush()
    assert got == [{"n": 1}]
    assert took < 2, "the wake-up token should beat the 30 s safety-net poll"
    assert fake_services.azure.texts("t-work") == []


def test_without_redis_a_message_is_found_by_polling_and_delivered_once(fake_services: FakeServices) -> None:
    got: list[Any] = []
    with connect(redis_url=None, max_polling_interval=0.2) as conn, conn.Consumer(WORK, callbacks=[acking(got)]):
        conn.Producer().publish("hello", exchange=WORK.exchange, routing_key="work", declare=[WORK])
        drain(conn, got, 1)
        drain(conn, got, 2, timeout=0.3)
        conn.transport.keeper.flush()
    assert got == ["hello"]
    assert fake_services.azure.texts("t-work") == []


def test_a_backlog_is_received_in_batches_of_up_to_32(fake_services: FakeServices) -> None:
    with connect() as conn:
        producer = conn.Producer()
        for n in range(40):
            producer.publish(n, exchange=WORK.exchange, routing_key="work", declare=[WORK])
        got: list[Any] = []
        with conn.Consumer(WORK, callbacks=[acking(got)], prefetch_count=40):
            drain(conn, got, 40)
            conn.transport.keeper.flush()
    assert sorted(got) == list(range(40))
    assert fake_services.azure.requests["receive"] <= 3, fake_services.azure.requests
    assert fake_services.azure.texts("t-work") == []


def dead_letters(conn: Connection, queue: str) -> list[Message]:
    """Every message of `queue`'s dead-letter queue, read back through Kombu."""
    conn.transport.keeper.flush()
    dlq = conn.SimpleQueue(f"{queue}-dlq")
    found = []
    while True:
        try:
            message = dlq.get_nowait()
        except dlq.Empty:
            return found
        found.append(message)
        message.ack()


def test_an_undecodable_message_is_dead_lettered_with_its_reason_never_delivered(
        fake_services: FakeServices) -> None:
    got: list[Any] = []
    with connect() as conn:
        conn.SimpleQueue("work").close()
        fake_services.azure.get_queue_client("t-work").send_message("not json {")
        with conn.Consumer(Queue("work"), callbacks=[acking(got)]):
            conn.transport.signals.announce("work", 1)
            deadline = time.monotonic() + 3
            while not fake_services.azure.texts("t-work-dlq") and time.monotonic() < deadline:
                drain(conn, got, 1, timeout=0.05)
        dead = dead_letters(conn, "work")
    assert got == []
    assert len(dead) == 1
    assert dead[0].headers["x-dead-letter-reason"].startswith("undecodable body: body is not JSON")
    assert dead[0].body == b"not json {"
    assert fake_services.azure.texts("t-work") == []


def test_a_message_delivered_more_than_the_limit_goes_to_the_dead_letter_queue(fake_services: FakeServices) -> None:
    with connect(max_delivery_count=2) as conn:
        queue = conn.SimpleQueue("work")
        queue.put({"task": "flaky"})
        for _ in range(2):
            message = queue.get_nowait()
            assert message.payload == {"task": "flaky"}
            message.requeue()
        with pytest.raises(queue.Empty):
            queue.get_nowait()
        dead = dead_letters(conn, "work")
    assert [m.payload for m in dead] == [{"task": "flaky"}]
    assert dead[0].headers["x-dead-letter-reason"] == "delivered 3 times (limit 2)"
    assert dead[0].headers["x-dead-letter-queue"] == "work"


def test_a_rejected_message_is_dead_lettered_and_a_requeued_one_comes_back(fake_services: FakeServices) -> None:
    with connect() as conn:
        queue = conn.SimpleQueue("work")
        queue.put("keep")
        queue.put("drop")
        first, second = queue.get_nowait(), queue.get_nowait()
        by_body = {first.payload: first, second.payload: second}
        by_body["keep"].requeue()
        by_body["drop"].reject()
        again = queue.get_nowait()
        assert again.payload == "keep" and again.delivery_info["redelivered"]
        again.ack()
        dead = dead_letters(conn, "work")
    assert [(m.payload, m.headers["x-dead-letter-reason"]) for m in dead] == [("drop", "rejected by the consumer")]
    assert fake_services.azure.texts("t-work") == []


def test_a_message_published_to_an_exchange_reaches_a_queue_another_connection_bound(
        fake_services: FakeServices) -> None:
    with connect() as worker, connect() as client:
        worker.SimpleQueue(WORK).close()  # declares and binds work to jobs/work, in the queue's metadata
        client.Producer().publish("routed", exchange="jobs", routing_key="work")
        message = worker.SimpleQueue(WORK).get_nowait()
        assert message.payload == "routed"
        message.ack()
