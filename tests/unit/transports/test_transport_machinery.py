"""The transport's parts over fake Azure and fake Redis: leases, bundles, wake-up tokens,
transient queues and the shared binding registry."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.unit.transports.fakes import FakeServices
from transports.azurequeue import Options, RedisKeys, TransientQueues, azure_queue_name, bundled, wakeup
from transports.azurequeue.accounts import Accounts
from transports.azurequeue.auth import Clients
from transports.azurequeue.leases import Lease, LeaseKeeper
from transports.azurequeue.queues import AzureQueues
from transports.azurequeue.redisside import RedisSide
from transports.azurequeue.registry import BindingRegistry, QueueRecord
from transports.azurequeue.wakeup import WakeSignals, token_time


@pytest.fixture
def connections(fake_services: FakeServices) -> Iterator[Any]:
    """Builds the Azure side of as many connections as a test needs; their keepers are closed after."""
    made: list[AzureQueues] = []

    def open_one(**options: Any) -> AzureQueues:
        opts = Options(queue_name_prefix="t-", redis_url="redis://fake", **options)
        side = RedisSide(opts)
        queues = AzureQueues(opts, lambda: Accounts((Clients(fake_services.azure, None),)),
                             LeaseKeeper(opts.visibility_timeout, 2), lambda: side)
        made.append(queues)
        return queues

    yield open_one
    for queues in made:
        queues.keeper.close()


def payload(body: Any) -> dict[str, Any]:
    return {"body": json.dumps(body), "content-type": "application/json", "content-encoding": "utf-8",
            "headers": {}, "properties": {"delivery_info": {}}}


def body(held: tuple[dict[str, Any], float | None]) -> Any:
    return json.loads(held[0]["body"])


def tag(held: tuple[dict[str, Any], float | None]) -> str:
    return str(held[0]["properties"]["delivery_tag"])


# Leases ------------------------------------------------------------------------------------


def test_a_held_message_is_renewed_so_it_never_reappears_until_it_is_acked(fake_services: FakeServices) -> None:
    client = fake_services.azure.get_queue_client("q")
    client.create_queue()
    client.send_message("task")
    keeper = LeaseKeeper(1, 2)  # the shortest visibility timeout: renewed every half second
    try:
        [message] = client.receive_messages(visibility_timeout=1)
        keeper.hold("tag", Lease("q", client, message.id, message.pop_receipt or "", 1))
        time.sleep(1.6)
        assert list(client.receive_messages(visibility_timeout=1)) == [], "the message reappeared while held"
        lease = keeper.take("tag")
        assert lease is not None
        keeper.settle(lease, lambda held: held.client.delete_message(held.message_id, held.pop_receipt))
    finally:
        keeper.close()
    assert fake_services.azure.texts("q") == []


def test_an_ack_that_comes_after_the_message_went_to_another_consumer_deletes_nothing(
        connections: Any, fake_services: FakeServices) -> None:
    slow, other = connections(), connections()
    slow.declare("work", {}, False)
    slow.put("work", payload("once"))
    _, [held] = slow.receive_batch("work", 1, no_ack=False)
    fake_services.azure.lapse("t-work")  # the slow consumer's hold lapsed: the message is visible again
    _, [again] = other.receive_batch("work", 1, no_ack=False)
    slow.ack(tag(held))
    slow.keeper.flush()
    assert body(again) == "once" and again[0]["properties"]["delivery_info"]["redelivered"]
    assert len(fake_services.azure.texts("t-work")) == 1, "the late ack deleted the other consumer's message"
    other.ack(tag(again))
    other.keeper.flush()
    assert fake_services.azure.texts("t-work") == []


# Bundles -----------------------------------------------------------------------------------


def test_sends_inside_bundled_travel_as_bundles_and_each_part_is_delivered_once(
        connections: Any, fake_services: FakeServices) -> None:
    producer, consumer = connections(bundle_size=4), connections()
    producer.declare("work", {}, False)
    with bundled():
        for n in range(6):
            producer.put("work", payload(n))
    assert len(fake_services.azure.texts("t-work")) == 2  # 4 + 2 parts
    received, held = consumer.receive_batch("work", 32, no_ack=False)
    assert received == 2
    assert sorted(body(h) for h in held) == list(range(6))
    for h in held:
        consumer.ack(tag(h))
    consumer.keeper.flush()
    assert fake_services.azure.texts("t-work") == []


def test_after_its_consumer_dies_a_bundle_redelivers_only_the_parts_not_acked(
        connections: Any, fake_services: FakeServices) -> None:
    producer, dies, survivor = connections(bundle_size=4), connections(), connections()
    producer.declare("work", {}, False)
    with bundled():
        for n in range(4):
            producer.put("work", payload(n))
    _, held = dies.receive_batch("work", 32, no_ack=False)
    acked = {body(h) for h in held[:2]}
    for h in held[:2]:
        dies.ack(tag(h))
    dies.keeper.flush()
    fake_services.azure.lapse("t-work")
    _, again = survivor.receive_batch("work", 32, no_ack=False)
    assert {body(h) for h in again} == set(range(4)) - acked
    assert all(h[0]["properties"]["delivery_info"]["redelivered"] for h in again)


def test_a_requeued_part_comes_back_alone_and_a_rejected_part_is_dead_lettered_alone(
        connections: Any, fake_services: FakeServices) -> None:
    producer, consumer = connections(bundle_size=4), connections()
    producer.declare("work", {}, False)
    with bundled():
        for n in ("ack", "requeue", "reject"):
            producer.put("work", payload(n))
    _, held = consumer.receive_batch("work", 32, no_ack=False)
    by_body = {body(h): tag(h) for h in held}
    consumer.ack(by_body["ack"])
    consumer.requeue(by_body["requeue"])
    consumer.reject(by_body["reject"], "bad input")
    consumer.keeper.flush()
    _, again = consumer.receive_batch("work", 32, no_ack=False)
    _, dead = consumer.receive_batch("work-dlq", 32, no_ack=False)
    assert [body(h) for h in again] == ["requeue"]
    assert [body(h) for h in dead] == ["reject"]
    assert dead[0][0]["headers"]["x-dead-letter-reason"] == "bad input"


def test_a_bundle_delivered_more_than_the_limit_has_its_open_parts_dead_lettered(
        connections: Any, fake_services: FakeServices) -> None:
    producer, consumer = connections(bundle_size=4), connections(max_delivery_count=1)
    producer.declare("work", {}, False)
    with bundled():
        for n in range(2):
            producer.put("work", payload(n))
    consumer.receive_batch("work", 32, no_ack=False)
    fake_services.azure.lapse("t-work")
    _, second = consumer.receive_batch("work", 32, no_ack=False)
    consumer.keeper.flush()
    assert second == []
    assert fake_services.azure.texts("t-work") == []
    _, dead = consumer.receive_batch("work-dlq", 32, no_ack=False)
    assert sorted(body(h) for h in dead) == [0, 1]
    assert {h[0]["headers"]["x-dead-letter-reason"] for h in dead} == {"delivered 2 times (limit 1)"}


# Wake-up tokens ----------------------------------------------------------------------------


def signals(fake_services: FakeServices) -> WakeSignals:
    keys = RedisKeys("t:")
    return WakeSignals(fake_services.redis_client(), keys, keys.nudge("test"))


def test_one_send_wakes_exactly_one_consumer(fake_services: FakeServices) -> None:
    sender, first, second = signals(fake_services), signals(fake_services), signals(fake_services)
    sender.notify("work")
    assert first.claim("work", 32) == 1
    assert second.claim("work", 32) == 0


def test_a_burst_of_sends_is_announced_as_one_counted_token(fake_services: FakeServices,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wakeup, "BURST_GAP", 60.0)  # a busy machine must not split the loop's sends
    sender, consumer = signals(fake_services), signals(fake_services)
    for _ in range(10):
        sender.notify("work")
    sender.flush()
    client = fake_services.redis_client()
    assert client.lrange(RedisKeys("t:").wake("work"), 0, -1) == ["n", "n9"]
    assert consumer.claim("work", 4) == 4  # a token worth more than asked goes back with the rest
    assert consumer.claim("work", 32) == 6


def test_sends_a_task_apart_are_each_announced_at_once(fake_services: FakeServices) -> None:
    """A chain's sends from one process: each starts a whole (fast) task after the previous one
    ended, so none waits for a burst's tokens to be pushed together."""
    sender = signals(fake_services)
    for _ in range(3):
        began = time.monotonic()
        sender.notify("work", began=began)
        time.sleep(0.008)
    assert fake_services.redis_client().lrange(RedisKeys("t:").wake("work"), 0, -1) == ["n", "n", "n"]


def test_a_delayed_send_announces_when_it_becomes_visible(fake_services: FakeServices) -> None:
    sender = signals(fake_services)
    at = time.time() + 30
    sender.notify("work", visible_at=at)
    [token] = fake_services.redis_client().lrange(RedisKeys("t:").due("work"), 0, -1)
    assert token_time(token) == pytest.approx(at, abs=0.001)
    assert sender.claim("work", 1) == 0  # not an immediate wake-up


# Transient queues --------------------------------------------------------------------------


def transient(fake_services: FakeServices) -> TransientQueues:
    return TransientQueues(fake_services.redis_client(), RedisKeys("t:"), max_length=3)


def test_a_transient_queue_delivers_what_was_put_while_it_lives_and_drops_what_expired(
        fake_services: FakeServices) -> None:
    owner, publisher = transient(fake_services), transient(fake_services)
    owner.declare("reply", {"x-expires": 10_000})
    publisher.put("reply", {"properties": {}, "body": "now"})
    publisher.put("reply", {"properties": {"expiration": "0"}, "body": "stale"})
    time.sleep(0.01)
    assert owner.size("reply") == 2
    assert owner.get("reply") == {"properties": {}, "body": "now"}
    assert owner.get("reply") is None  # the expired one is dropped, not delivered


def test_a_transient_queue_keeps_only_its_newest_messages(fake_services: FakeServices) -> None:
    queues = transient(fake_services)
    queues.declare("events", {}, True)
    for n in range(5):
        queues.put("events", {"properties": {}, "body": n})
    assert [queues.get("events")["body"] for _ in range(3)] == [2, 3, 4]  # type: ignore[index]


def test_a_message_for_a_transient_queue_whose_owner_died_is_dropped_not_recreating_it(
        fake_services: FakeServices) -> None:
    owner, publisher = transient(fake_services), transient(fake_services)
    owner.declare("reply", {})
    fake_services.redis_client().delete(RedisKeys("t:").alive("reply"))  # its owner stopped refreshing it
    publisher.put("reply", {"properties": {}, "body": "late"})
    assert publisher.existing_size("reply") is None
    assert publisher.size("reply") == 0


def test_a_keepalive_renews_every_queue_of_the_process_with_its_bindings_in_one_command(
        fake_services: FakeServices) -> None:
    owner, publisher = transient(fake_services), transient(fake_services)
    owner.declare("pidbox", {"x-expires": 10_000})
    owner.declare("events", {"x-message-ttl": 5_000})
    owner.bind("pidbox", "control", "fanout", "")
    owner.bind("events", "ev", "topic", "worker.#")
    client = fake_services.redis_client()
    keys = RedisKeys("t:")
    client.delete(keys.alive("pidbox"), keys.alive("events"), keys.bindings("control"), keys.bindings("ev"))
    owner.keepalive()
    assert 0 < client.pttl(keys.alive("pidbox")) <= 10_000 and client.get(keys.alive("events")) == "m5000"
    assert publisher.routes("control") == [("fanout", "", "pidbox")]
    assert publisher.routes("ev") == [("topic", "worker.#", "events")]


def test_transient_bindings_route_publishers_until_the_queue_is_deleted(fake_services: FakeServices) -> None:
    owner, publisher = transient(fake_services), transient(fake_services)
    owner.declare("host.pidbox", {}, True)
    owner.bind("host.pidbox", "celery.pidbox", "fanout", "")
    assert publisher.routes("celery.pidbox") == [("fanout", "", "host.pidbox")]
    assert publisher.names() == ["host.pidbox"]
    owner.delete_owned()
    assert publisher.routes("celery.pidbox") == []
    assert publisher.names() == []


# The shared binding registry ---------------------------------------------------------------


def registry(fake_services: FakeServices, stale_after: float = 180.0) -> BindingRegistry:
    service = fake_services.azure
    return BindingRegistry([service], lambda queue: service.get_queue_client(azure_queue_name(queue, "t-")),  # type: ignore[arg-type,return-value]
                           "t-", cache_seconds=5.0, stale_after=stale_after)


def test_a_binding_made_in_one_process_routes_publishes_in_another(fake_services: FakeServices) -> None:
    worker, client = registry(fake_services), registry(fake_services)
    record = worker.record_for_new_queue("work", {"x-message-ttl": 60_000}, auto_delete=False)
    worker.declare(record)
    fake_services.azure.get_queue_client(azure_queue_name("work", "t-")).create_queue(metadata=worker.metadata(record))
    worker.bind("work", ("jobs", "topic", "orders.*"), lambda bindings: bindings.add(("jobs", "topic", "orders.*")))
    [(key, pattern, queue)] = client.routes("jobs")
    assert (key, queue) == ("orders.*", "work") and pattern is not None
    assert client.exchange_type("jobs") == "topic"
    assert client.message_ttl_ms("work") == 60_000


def test_an_abandoned_transient_azure_queue_is_deleted_by_whoever_lists_the_bindings(
        fake_services: FakeServices) -> None:
    stale = QueueRecord("gone.reply", {("reply", "direct", "gone.reply")}, expires_s=10.0,
                        heartbeat=time.time() - 60)
    alive = QueueRecord("live.reply", {("reply", "direct", "live.reply")}, expires_s=10.0, heartbeat=time.time())
    for record in (stale, alive):
        fake_services.azure.get_queue_client(azure_queue_name(record.name, "t-")).create_queue(
            metadata=record.metadata("t-"))
    lister = registry(fake_services)
    lister.refresh()
    assert [queue for _, _, queue in lister.routes("reply")] == ["live.reply"]
    assert sorted(fake_services.azure.queues) == [azure_queue_name("live.reply", "t-")]
