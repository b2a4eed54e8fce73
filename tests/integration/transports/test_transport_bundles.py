"""Bundles over real Azurite and Redis: sends inside `bundled()` travel as few Azure messages,
each part is still its own Kombu message (delivered, acked, requeued, rejected on its own).

Every test counts Azure messages with the plain SDK behind the transport's back, so it fails if
the sends are not bundled, and checks what consumers receive, so it fails if a part is lost,
delivered twice, or its bundle outlives its last part.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueServiceClient
from kombu import Connection, Consumer, Exchange, Message, Producer, Queue

from tests.integration.transports.transport_support import (
    Process,
    Processes,
    azure_queue,
    client_app,
    connection,
    processes,
    wait_for,
)
from transports.azurequeue.bundles import bundled
from transports.azurequeue.naming import listing_prefix
from transports.azurequeue.stats import STATS

#: A consumer that takes `count` messages of a queue, acks those whose `n` is listed, waits for
#: the acks to reach Azure and Redis, says which it acked, then sleeps until it is killed.
HOLD_AND_ACK = """
import contextlib, json, sys, time
from kombu import Consumer, Exchange, Queue
from tests.integration.transports.transport_support import connection

prefix, name, count, acks, options = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]), \\
    json.loads(sys.argv[5])
got = []
with connection(prefix, **options) as conn:
    queue = Queue(name, Exchange(name, "direct"), routing_key=name)
    with Consumer(conn, [queue], callbacks=[lambda body, message: got.append(message)]):
        deadline = time.monotonic() + 30
        while len(got) < count and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.5)
        acked = sorted(m.payload["n"] for m in got if m.payload["n"] in acks)
        for message in got:
            if message.payload["n"] in acks:
                message.ack()
        conn.transport.keeper.flush()
        print("holding", json.dumps(sorted(m.payload["n"] for m in got)), "acked", json.dumps(acked), flush=True)
        time.sleep(300)
"""


@pytest.fixture
def cleanup(unique_prefix: str, rdb: redis.Redis) -> Iterator[None]:
    """Delete this test's Azure queues at teardown."""
    yield
    service = QueueServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
    for queue in service.list_queues(name_starts_with=listing_prefix(unique_prefix)):
        with contextlib.suppress(ResourceNotFoundError):
            service.delete_queue(queue.name)


@pytest.fixture
def procs(tmp_path: Path, unique_prefix: str, cleanup: None) -> Iterator[Processes]:
    """Processes of this test, killed at teardown even when it fails (before its queues go)."""
    with processes(tmp_path, unique_prefix) as started:
        yield started


def redis_connection(prefix: str, **options: Any) -> Connection:
    """A connection with Redis, so sends inside `bundled()` are bundled."""
    return connection(prefix, redis_url=os.environ["REDIS_URL"], **options)


def kombu_queue(name: str) -> Queue:
    """The Kombu queue `name` on its own direct exchange (as SimpleQueue declares it)."""
    return Queue(name, Exchange(name, "direct"), routing_key=name)


def publish(conn: Connection, name: str, numbers: range | list[int], pad: int = 0, **kwargs: Any) -> None:
    """Publish `{"n": i}` (padded with `pad` characters) to queue `name` for each number."""
    queue = kombu_queue(name)
    producer = Producer(conn.channel())
    for n in numbers:
        body: dict[str, Any] = {"n": n, "pad": "x" * pad} if pad else {"n": n}
        producer.publish(body, exchange=queue.exchange, routing_key=name, declare=[queue], **kwargs)


def envelopes(prefix: str, name: str) -> list[dict[str, Any]]:
    """The envelopes of the visible Azure messages of queue `name` (peeked, left in place)."""
    try:
        peeked = azure_queue(prefix, name).peek_messages(max_messages=32)
    except ResourceNotFoundError:
        return []
    return [json.loads(message.content) for message in peeked]


def shape(prefix: str, name: str) -> list[int | str]:
    """How the visible Azure messages of a queue carry Kombu messages, sorted: the part count of
    each bundle, "m" for a plain message, "blob" for one stored out of line."""
    found: list[int | str] = []
    for envelope in envelopes(prefix, name):
        found.append(len(envelope["ms"]) if "ms" in envelope else "m" if "m" in envelope else "blob")
    return sorted(found, key=str)


def azure_count(prefix: str, name: str) -> int:
    """Azure's count of a queue's messages, hidden ones included (0 for a queue not created yet)."""
    try:
        return azure_queue(prefix, name).get_queue_properties().approximate_message_count or 0
    except ResourceNotFoundError:
        return 0


def bundle_keys(rdb: redis.Redis, prefix: str) -> list[str]:
    """The transport's records of settled bundle parts under `prefix`."""
    return list(rdb.scan_iter(f"azurequeue:{prefix}bundle:*"))


@contextmanager
def consuming(conn: Connection, name: str) -> Iterator[list[Message]]:
    """Consume queue `name` without acking; yield the list the deliveries are appended to."""
    got: list[Message] = []

    def on_message(body: Any, message: Message) -> None:
        got.append(message)

    with Consumer(conn, [kombu_queue(name)], callbacks=[on_message]):
        yield got


def drain(conn: Connection, until: Callable[[], bool], seconds: float) -> None:
    """Deliver messages on `conn` until `until()` holds or `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while not until() and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            conn.drain_events(timeout=max(0.05, min(0.5, deadline - time.monotonic())))


def numbers(messages: list[Message]) -> list[int]:
    """The sorted `n` of each delivered message (duplicates kept)."""
    return sorted(int(message.payload["n"]) for message in messages)


def settled(rdb: redis.Redis, prefix: str, name: str) -> bool:
    """Whether queue `name` has no Azure message left (hidden ones included) and no bundle record."""
    return azure_count(prefix, name) == 0 and not bundle_keys(rdb, prefix)


def entries(rdb: redis.Redis, key: str) -> list[str]:
    """The list a test task appended to."""
    return [str(entry) for entry in rdb.lrange(key, 0, -1)]


def start_holder(procs: Processes, prefix: str, name: str, count: int, acks: list[int], **options: Any) -> Process:
    """Start a consumer process that takes `count` messages, acks those numbered in `acks` and
    holds the rest until killed; return once it has acked."""
    options = {"redis_url": os.environ["REDIS_URL"], **options}
    holder = procs.start("holder", [sys.executable, "-c", HOLD_AND_ACK, prefix, name, str(count),
                                    json.dumps(acks), json.dumps(options)])
    wait_for(lambda: "holding" in holder.text() or holder.proc.poll() is not None, 40, "the holder to ack")
    assert holder.proc.poll() is None, holder.text()
    return holder


def test_ten_sends_travel_as_three_bundles_and_each_part_is_delivered_once(
    unique_prefix: str, rdb: redis.Redis, cleanup: None
) -> None:
    """10 publishes in bundled() are 3 Azure messages (4+4+2), sent when the block ends; a consumer
    gets 10 separate messages once each; acking all deletes the bundles and their records."""
    with redis_connection(unique_prefix) as conn:
        with bundled():
            publish(conn, "ten", range(10))
            assert shape(unique_prefix, "ten") == [], "sent before the block ended"
        assert shape(unique_prefix, "ten") == [2, 4, 4]
        with consuming(conn, "ten") as got:
            drain(conn, lambda: len(got) >= 10, 20)
            drain(conn, lambda: len(got) > 10, 1)
            assert numbers(got) == list(range(10))
            assert len({message.delivery_tag for message in got}) == 10
            assert not any(message.delivery_info["redelivered"] for message in got)
            assert azure_count(unique_prefix, "ten") == 3
            for message in got:
                message.ack()
            wait_for(lambda: settled(rdb, unique_prefix, "ten"), 10, "the bundles and their records to go")
            drain(conn, lambda: len(got) > 10, 1)
            assert len(got) == 10


def test_nested_blocks_send_at_the_outer_end_per_queue_and_a_lone_leftover_goes_plain(
    unique_prefix: str, rdb: redis.Redis, cleanup: None
) -> None:
    """An inner bundled() block sends nothing; the outer one bundles each queue apart (9 -> 4+4+1
    plain, 2 -> one bundle); every message is delivered once."""
    with redis_connection(unique_prefix) as conn:
        with bundled():
            publish(conn, "first", range(5))
            with bundled():
                publish(conn, "first", range(5, 9))
                publish(conn, "second", range(100, 102))
            assert shape(unique_prefix, "first") == [] and shape(unique_prefix, "second") == []
        assert shape(unique_prefix, "first") == [4, 4, "m"]
        assert shape(unique_prefix, "second") == [2]
        with consuming(conn, "first") as first, consuming(conn, "second") as second:
            drain(conn, lambda: len(first) + len(second) >= 11, 10)
            drain(conn, lambda: len(first) + len(second) > 11, 1)
            assert numbers(first) == list(range(9))
            assert numbers(second) == [100, 101]
            for message in first + second:
                message.ack()
        wait_for(lambda: settled(rdb, unique_prefix, "first") and settled(rdb, unique_prefix, "second"), 10,
                 "both queues to empty")


def test_killed_consumer_leaves_only_its_unacked_parts_to_be_redelivered(
    unique_prefix: str, rdb: redis.Redis, procs: Processes
) -> None:
    """A consumer acks 6 of 10 bundled messages and is SIGKILLed; after the visibility timeout a
    new consumer receives exactly the 4 unacked ones, once, and the queue ends empty."""
    with redis_connection(unique_prefix, visibility_timeout=2, max_polling_interval=1) as conn:
        with bundled():
            publish(conn, "crash", range(10))
        assert shape(unique_prefix, "crash") == [2, 4, 4]
        holder = start_holder(procs, unique_prefix, "crash", 10, [0, 1, 2, 3, 5, 8], visibility_timeout=2)
        assert 'holding [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] acked [0, 1, 2, 3, 5, 8]' in holder.text()
        assert azure_count(unique_prefix, "crash") == 2, "the fully acked bundle was not deleted"
        holder.kill()
        holder.proc.wait(10)
        with consuming(conn, "crash") as got:
            drain(conn, lambda: len(got) >= 4, 20)
            drain(conn, lambda: len(got) > 4, 4)  # two visibility timeouts: a duplicate would show
            assert numbers(got) == [4, 6, 7, 9]
            assert all(message.delivery_info["redelivered"] for message in got)
            for message in got:
                message.ack()
            wait_for(lambda: settled(rdb, unique_prefix, "crash"), 10, "the bundles and their records to go")
            drain(conn, lambda: len(got) > 4, 3)
            assert numbers(got) == [4, 6, 7, 9]


def test_requeued_part_returns_alone_at_once_and_rejected_part_goes_alone_to_the_dlq(
    unique_prefix: str, rdb: redis.Redis, cleanup: None
) -> None:
    """Of a 4-part bundle, a requeued part is redelivered alone long before the visibility timeout,
    a rejected one is the only message of the dead-letter queue (with the reason), and acking the
    rest (and the requeued part) leaves nothing behind."""
    with redis_connection(unique_prefix, visibility_timeout=60) as conn:
        with bundled():
            publish(conn, "parts", range(4))
        assert shape(unique_prefix, "parts") == [4]
        with consuming(conn, "parts") as got:
            drain(conn, lambda: len(got) >= 4, 10)
            assert numbers(got) == [0, 1, 2, 3]
            by_number = {message.payload["n"]: message for message in got}
            requeued_at = time.monotonic()
            by_number[0].requeue()
            by_number[1].reject()
            drain(conn, lambda: len(got) >= 5, 10)
            assert time.monotonic() - requeued_at < 10
            assert numbers(got) == [0, 0, 1, 2, 3], "the requeued part did not come back alone"
            again = got[4]
            assert again.delivery_tag != by_number[0].delivery_tag
            assert again.delivery_info["redelivered"], "a requeued part must come back as redelivered"
            wait_for(lambda: azure_count(unique_prefix, "parts-dlq") >= 1, 10, "the dead letter")
            assert shape(unique_prefix, "parts-dlq") == ["m"]
            dlq = conn.SimpleQueue("parts-dlq")
            dead = dlq.get(timeout=10)
            assert dead.payload["n"] == 1
            assert dead.headers["x-dead-letter-reason"] == "rejected by the consumer"
            assert dead.headers["x-dead-letter-queue"] == "parts"
            dead.ack()
            by_number[2].ack()
            by_number[3].ack()
            again.ack()
            wait_for(lambda: settled(rdb, unique_prefix, "parts"), 10, "the bundle and its record to go")
            drain(conn, lambda: len(got) > 5, 2)
            assert len(got) == 5
            with pytest.raises(dlq.Empty):
                dlq.get(timeout=1)
            dlq.close()


def test_consumer_with_room_for_two_takes_two_parts_and_the_rest_go_back_at_once_for_another(
    unique_prefix: str, rdb: redis.Redis, cleanup: None
) -> None:
    """A consumer with prefetch 2 receives a 4-part bundle: it is handed 2 parts and holds no more,
    and the other 2 are visible again at once (one Azure message), so a second consumer gets them
    long before the visibility timeout; each part is delivered once and nothing is left behind."""
    with redis_connection(unique_prefix, visibility_timeout=60) as busy, \
            redis_connection(unique_prefix, visibility_timeout=60) as idle:
        with bundled():
            publish(busy, "room", range(4))
        assert shape(unique_prefix, "room") == [4]
        first: list[Message] = []
        channel = busy.channel()
        channel.basic_qos(0, 2, False)
        with Consumer(channel, [kombu_queue("room")], callbacks=[lambda body, message: first.append(message)]):
            drain(busy, lambda: len(first) >= 2, 10)
            wait_for(lambda: shape(unique_prefix, "room") == [2], 10, "the 2 parts without room to go back")
            drain(busy, lambda: len(first) > 2, 1)
            assert len(first) == 2, "a consumer was handed more than its prefetch"
            with consuming(idle, "room") as second:
                started = time.monotonic()
                drain(idle, lambda: len(second) >= 2, 10)
                assert time.monotonic() - started < 10
                drain(idle, lambda: len(second) > 2, 1)
                assert numbers(first + second) == [0, 1, 2, 3]
                assert not any(message.delivery_info["redelivered"] for message in second)
                for message in first + second:
                    message.ack()
            wait_for(lambda: settled(rdb, unique_prefix, "room"), 10, "the bundles and their records to go")


def test_a_part_without_room_goes_to_its_consumer_when_an_ack_opens_room_at_once_and_does_not_go_back(
    unique_prefix: str, rdb: redis.Redis, cleanup: None
) -> None:
    """A consumer with prefetch 2 receives a 4-part bundle and acks a part as soon as it has it
    (a short task): the parts it had no room for are handed to it as room opens, none goes
    back to the queue (no new Azure message), and each part is delivered once."""
    with redis_connection(unique_prefix, visibility_timeout=60) as conn:
        with bundled():
            publish(conn, "spare", range(4))
        assert shape(unique_prefix, "spare") == [4]
        got: list[Message] = []

        def ack_at_once(body: Any, message: Message) -> None:
            got.append(message)
            message.ack()

        channel = conn.channel()
        channel.basic_qos(0, 2, False)
        sent_before = STATS.snapshot().get("queue.send", 0)
        with Consumer(channel, [kombu_queue("spare")], callbacks=[ack_at_once]):
            drain(conn, lambda: len(got) >= 4, 10)
            drain(conn, lambda: len(got) > 4, 0.5)
        assert STATS.snapshot().get("queue.send", 0) == sent_before, "parts went back although room opened"
        assert numbers(got) == [0, 1, 2, 3]
        assert not any(message.delivery_info["redelivered"] for message in got)
        wait_for(lambda: settled(rdb, unique_prefix, "spare"), 10, "the bundle and its record to go")


def test_without_redis_sends_inside_bundled_go_one_by_one_at_once(unique_prefix: str, cleanup: None) -> None:
    """Without `redis_url` bundled() changes nothing: 10 publishes are 10 plain Azure messages,
    already sent inside the block, each delivered once."""
    with connection(unique_prefix, polling_interval=0.1) as conn:
        with bundled():
            publish(conn, "plain", range(10))
            assert azure_count(unique_prefix, "plain") == 10
        assert shape(unique_prefix, "plain") == ["m"] * 10
        with consuming(conn, "plain") as got:
            drain(conn, lambda: len(got) >= 10, 10)
            drain(conn, lambda: len(got) > 10, 1)
            assert numbers(got) == list(range(10))
            for message in got:
                message.ack()
        wait_for(lambda: azure_count(unique_prefix, "plain") == 0, 10, "the queue to empty")


def test_delayed_message_inside_bundled_is_sent_hidden_at_once_and_not_bundled(
    unique_prefix: str, rdb: redis.Redis, cleanup: None
) -> None:
    """Inside bundled(), a message with an ETA 4 s ahead goes out at once, hidden, on its own; the
    3 immediate ones are one bundle; the delayed one is delivered only near its ETA."""
    with redis_connection(unique_prefix) as conn:
        eta = datetime.now(UTC) + timedelta(seconds=4)
        with bundled():
            publish(conn, "mixed", [0, 1])
            publish(conn, "mixed", [9], headers={"eta": eta.isoformat()})
            publish(conn, "mixed", [2])
            assert azure_count(unique_prefix, "mixed") == 1, "the delayed message was not sent at once"
            assert shape(unique_prefix, "mixed") == [], "the delayed message is visible"
        assert shape(unique_prefix, "mixed") == [3]
        assert azure_count(unique_prefix, "mixed") == 2
        with consuming(conn, "mixed") as got:
            drain(conn, lambda: len(got) >= 3, 10)
            assert numbers(got) == [0, 1, 2]
            drain(conn, lambda: len(got) >= 4, 10)
            assert numbers(got) == [0, 1, 2, 9]
            assert datetime.now(UTC) >= eta - timedelta(seconds=1.1), "the delayed message came early"
            for message in got:
                message.ack()
            wait_for(lambda: settled(rdb, unique_prefix, "mixed"), 10, "the queue to empty")


def test_small_large_message_threshold_makes_smaller_bundles_and_a_big_body_goes_alone(
    unique_prefix: str, rdb: redis.Redis, cleanup: None
) -> None:
    """With large_message_threshold=2000, 8 messages of ~700 characters go 2 per bundle (4 Azure
    messages, none over 2000) and one of ~4000 alone through a blob; each is delivered once."""
    with redis_connection(unique_prefix, large_message_threshold=2000) as conn:
        with bundled():
            publish(conn, "sized", range(4), pad=300)
            publish(conn, "sized", [99], pad=3000)
            publish(conn, "sized", range(4, 8), pad=300)
        assert shape(unique_prefix, "sized") == [2, 2, 2, 2, "blob"]
        texts = [message.content for message in azure_queue(unique_prefix, "sized").peek_messages(max_messages=32)]
        assert max(len(text) for text in texts) <= 2000
        with consuming(conn, "sized") as got:
            drain(conn, lambda: len(got) >= 9, 10)
            drain(conn, lambda: len(got) > 9, 1)
            assert numbers(got) == [*range(8), 99]
            assert len(next(m for m in got if m.payload["n"] == 99).payload["pad"]) == 3000
            for message in got:
                message.ack()
            wait_for(lambda: settled(rdb, unique_prefix, "sized"), 10, "the queue to empty")


def test_part_without_expiration_outlives_a_short_lived_sibling_in_its_block(
    unique_prefix: str, rdb: redis.Redis, cleanup: None
) -> None:
    """A message without expiration, sent in one block with one that expires after 1 s, is not
    bundled with it and is still delivered 3 s later (Celery sets `expiration` from `expires`)."""
    with redis_connection(unique_prefix) as conn:
        with bundled():
            publish(conn, "ttl", [0], expiration=1)
            publish(conn, "ttl", [1])
        assert shape(unique_prefix, "ttl") == ["m", "m"]
        time.sleep(3)
        with consuming(conn, "ttl") as got:
            drain(conn, lambda: 1 in numbers(got), 5)
            for message in got:
                message.ack()
            assert 1 in numbers(got), "the message without expiration was lost with its bundle"


def test_bundle_delivered_past_max_delivery_count_dead_letters_its_unacked_parts_one_by_one(
    unique_prefix: str, rdb: redis.Redis, procs: Processes
) -> None:
    """A consumer acks 1 part of a 3-part bundle and dies; the second delivery exceeds
    max_delivery_count=1, so the 2 unacked parts land in the dlq as 2 messages with the reason,
    none is delivered, and the bundle and its record are gone."""
    with redis_connection(unique_prefix, visibility_timeout=2, max_polling_interval=1,
                          max_delivery_count=1) as conn:
        with bundled():
            publish(conn, "bounce", range(3))
        assert shape(unique_prefix, "bounce") == [3]
        holder = start_holder(procs, unique_prefix, "bounce", 3, [0], visibility_timeout=2)
        assert "acked [0]" in holder.text()
        holder.kill()
        holder.proc.wait(10)
        with consuming(conn, "bounce") as got:
            drain(conn, lambda: azure_count(unique_prefix, "bounce-dlq") >= 2 or bool(got), 20)
            wait_for(lambda: settled(rdb, unique_prefix, "bounce"), 10, "the bundle and its record to go")
            drain(conn, lambda: bool(got), 1)
            assert got == [], "a part of a bundle past its delivery limit was delivered"
        assert shape(unique_prefix, "bounce-dlq") == ["m", "m"]
        dlq = conn.SimpleQueue("bounce-dlq")
        dead = [dlq.get(timeout=10) for _ in range(2)]
        assert numbers(dead) == [1, 2]
        for message in dead:
            assert message.headers["x-dead-letter-reason"] == "delivered 2 times (limit 1)"
            assert message.headers["x-dead-letter-queue"] == "bounce"
            message.ack()
        dlq.close()


def test_celery_worker_runs_each_bundled_task_once_under_its_own_id(
    unique_prefix: str, rdb: redis.Redis, procs: Processes
) -> None:
    """12 acks_late tasks sent from a client app inside bundled() are 3 Azure messages; a prefork
    worker at the default prefetch, holding bundles past the 3 s visibility timeout, runs each once
    under its own task id, and the queue ends empty."""
    app = client_app(unique_prefix, visibility=3)
    key = f"{unique_prefix}:bundled"
    with bundled():
        results = [app.send_task("transport_app.tagged", args=[key, str(i), 0.5]) for i in range(12)]
    ids = {result.id for result in results}
    assert len(ids) == 12
    assert shape(unique_prefix, "celery") == [4, 4, 4]
    worker = procs.worker("bundles", 3)
    wait_for(lambda: sum(e.startswith("done") for e in entries(rdb, key)) >= 12, 60, "12 tasks to finish")
    time.sleep(4)  # past the visibility timeout: a part whose hold was lost would run again by now
    runs = Counter(entries(rdb, key))
    assert runs == Counter({f"{step}:{i}": 1 for i in range(12) for step in ("start", "done")}), (
        f"{dict(runs)}\n{worker.text()[-3000:]}")
    succeeded = re.findall(r"Task transport_app\.tagged\[([0-9a-f-]+)\] succeeded", worker.text())
    assert sorted(succeeded) == sorted(ids)
    wait_for(lambda: settled(rdb, unique_prefix, "celery"), 10, "the bundles and their records to go")
