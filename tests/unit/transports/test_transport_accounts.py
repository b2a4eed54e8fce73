"""Queue shards over several storage accounts (the `storage_accounts` option): shard i of a queue,
its dead-letter queue and its large bodies live in account i mod K, everything else in the broker's
account; every request for a queue goes to its account; connecting checks each account; the
operator's queue listing and dead-letter commands see every account."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError
from celery import Celery
from kombu import Connection, Exchange, Queue
from kombu.message import Message

import transports  # noqa: F401  (registers azurequeue://)
from flowcraft_celery.distributed.core.problems import explain
from flowcraft_celery.distributed.core.shards import shard_names, shards_to_consume
from flowcraft_celery.distributed.ops.broker_inspect import QueueAdmin
from flowcraft_celery.distributed.reconcile.queue_evidence import QueueFronts
from tests.unit.transports.fakes import FAKE_ENTRIES, FakeAccounts, FakeServices
from transports.azurequeue import AccountError, Accounts, BrokerUnreachable, shard_index, shard_queue_name
from transports.azurequeue.auth import Clients

JOBS = Exchange("jobs", "direct")
#: Shards 0-4 of `work`: with three accounts they live in accounts 0, 1, 2, 0, 1.
SHARDS = [Queue(name, JOBS, name) for name in shard_names("work", 5)]


def connect(accounts: list[str] | None = FAKE_ENTRIES, **options: Any) -> Connection:
    """A connection to the fake accounts (the safety-net poll is 30 s: only a wake-up is fast)."""
    return Connection("azurequeue://", transport_options={
        "queue_name_prefix": "t-", "redis_url": "redis://fake", "polling_interval": 0.01,
        "max_polling_interval": 30, "storage_accounts": accounts, **options})


def drain(conn: Connection, got: list[Any], want: int, timeout: float = 3.0) -> None:
    """Deliver until `want` messages arrived or `timeout` passed."""
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            conn.drain_events(timeout=0.1)


def test_shard_i_and_its_dead_letter_queue_live_in_account_i_mod_k_and_every_other_queue_in_account_0() -> None:
    accounts = Accounts(tuple(Clients(object(), None) for _ in range(3)))  # type: ignore[arg-type]
    assert [accounts.index(name) for name in shard_names("work", 5)] == [0, 1, 2, 0, 1]
    assert [accounts.index(f"{name}-dlq") for name in shard_names("work", 5)] == [0, 1, 2, 0, 1]
    others = ("work-reconcile", "w1@host.celery.pidbox", "celeryev.1a2b", "work-shard0", "work-shards2", "work-dlq")
    for other in others:
        assert accounts.index(other) == 0, other
    assert Accounts((Clients(object(), None),)).index("work-shard7") == 0  # type: ignore[arg-type]
    assert [shard_index(shard_queue_name("q", i)) for i in range(4)] == [0, 1, 2, 3]


def test_the_shard_rules_of_the_workflow_library_are_unchanged() -> None:
    assert shard_names("heavy", 3) == ["heavy", "heavy-shard1", "heavy-shard2"]
    conf = {"flowcraft_queue_shards": 3, "flowcraft_reconcile_queue": "flowcraft-reconcile"}
    assert shards_to_consume(["heavy", "heavy-shard1-dlq", "heavy-shard2", "flowcraft-reconcile"], conf) == [
        "heavy-shard1", "heavy-shard1-dlq-shard1", "heavy-shard1-dlq-shard2"]


def test_each_shard_is_declared_sent_received_and_deleted_in_its_own_account(fake_accounts: FakeAccounts) -> None:
    got: list[Any] = []

    def ack(body: Any, message: Message) -> None:
        got.append(body)
        message.ack()

    with connect() as conn:
        producer = conn.Producer()
        for n, queue in enumerate(SHARDS):
            producer.publish({"n": n}, exchange=JOBS, routing_key=queue.routing_key, declare=[queue])
        assert [fake_accounts.where(f"t-{q.name}") for q in SHARDS] == [[0], [1], [2], [0], [1]]
        held = [fake_accounts.azure[a].texts(f"t-{q.name}") for a, q in zip([0, 1, 2, 0, 1], SHARDS, strict=True)]
        assert [len(texts) for texts in held] == [1] * 5
        with conn.Consumer(SHARDS, callbacks=[ack], prefetch_count=10):
            drain(conn, got, 5)
            conn.transport.keeper.flush()
    assert sorted(m["n"] for m in got) == [0, 1, 2, 3, 4]
    for number, service in enumerate(fake_accounts.azure):
        assert all(not service.texts(name) for name in service.queues), number
        assert service.requests["delete"] == [2, 2, 1][number]  # each ack deleted in the account holding it


def test_a_publish_through_the_exchange_finds_a_binding_made_in_another_account(fake_accounts: FakeAccounts) -> None:
    with connect() as worker:
        worker.SimpleQueue(SHARDS[2]).close()  # the worker declares and binds work-shard2 in account 2
    with connect() as client:
        client.Producer().publish("hello", exchange=JOBS, routing_key="work-shard2")
    assert fake_accounts.azure[2].texts("t-work-shard2") and not fake_accounts.azure[0].texts("t-work-shard2")


def test_size_purge_and_a_passive_declare_ask_the_account_holding_the_queue(fake_accounts: FakeAccounts) -> None:
    with connect() as conn:
        queue = conn.SimpleQueue(SHARDS[1])
        queue.put("a")
        queue.put("b")
        assert queue.qsize() == 2
        assert conn.default_channel.queue_declare("work-shard1", passive=True).message_count == 2
        assert queue.clear() == 2
        queue.close()
    assert fake_accounts.azure[1].queues["t-work-shard1"].messages == {}
    assert "t-work-shard1" not in fake_accounts.azure[0].queues


def test_a_rejected_message_goes_to_the_dead_letter_queue_beside_its_shard(fake_accounts: FakeAccounts) -> None:
    with connect() as conn:
        queue = conn.SimpleQueue(SHARDS[2])
        queue.put("bad")
        queue.get(timeout=2).reject()
        conn.transport.keeper.flush()
        queue.close()
    assert fake_accounts.where("t-work-shard2-dlq") == [2]
    assert len(fake_accounts.azure[2].texts("t-work-shard2-dlq")) == 1


def test_a_large_body_is_stored_beside_its_queue_and_deleted_on_ack(fake_accounts: FakeAccounts) -> None:
    big = "x" * 2000
    with connect(large_message_threshold=1000) as conn:
        queue = conn.SimpleQueue(SHARDS[1])
        queue.put(big)
        assert len(fake_accounts.blobs[1].blobs) == 1 and not fake_accounts.blobs[0].blobs
        message = queue.get(timeout=2)
        assert message.payload == big
        message.ack()
        conn.transport.keeper.flush()
        queue.close()
    assert not fake_accounts.blobs[1].blobs


def test_connecting_asks_every_account_once_and_names_the_one_that_does_not_answer(
        fake_accounts: FakeAccounts) -> None:
    with connect() as conn:
        conn.connect()
    assert [service.requests["list"] for service in fake_accounts.azure] == [1, 1, 1]

    def down(*args: Any, **kwargs: Any) -> Any:
        raise ServiceRequestError("Connection refused")

    fake_accounts.azure[2].list_queues = down  # type: ignore[method-assign]
    with pytest.raises(BrokerUnreachable, match=r"`storage_accounts` entry 2 \(http://127.0.0.1:1/fake2\) does not") \
            as caught:
        connect().connect()
    told = str(explain(caught.value, {}, {}))
    assert told.startswith("cannot reach Azure Storage at http://127.0.0.1:1/fake2 "
                           "(FLOWCRAFT_STORAGE_ACCOUNTS entry 2): connection refused"), told


def test_without_further_accounts_connecting_costs_one_request_and_every_queue_stays_in_the_main_account(
        fake_services: FakeServices) -> None:
    with connect(accounts=None) as conn:
        conn.connect()
        assert fake_services.azure.requests["list"] == 1
        queue = conn.SimpleQueue(SHARDS[1])
        queue.put("a")
        message = queue.get(timeout=2)
        assert message.payload == "a"
        message.ack()
        conn.transport.keeper.flush()
        queue.close()
    assert fake_services.azure.texts("t-work-shard1") == [] and "t-work-shard1" in fake_services.azure.queues


def test_a_malformed_entry_is_named_by_its_number_and_never_shown() -> None:
    main = "DefaultEndpointsProtocol=http;AccountName=main;AccountKey=bWFpbg==;QueueEndpoint=http://127.0.0.1:1/main"
    with pytest.raises(AccountError, match=r"`storage_accounts` entry 2 \(storage account 2\) is not usable") as caught:
        Accounts.build("", {"connection_string": main, "storage_accounts": [FAKE_ENTRIES[0], "hunter2-secret"]})
    assert "hunter2" not in str(caught.value)
    with pytest.raises(AccountError, match=r"entry 1 .*needs the account"):
        Accounts.build("", {"connection_string": main, "storage_accounts": "azurequeue://"})
    two = Accounts.build("", {"connection_string": main, "storage_accounts": f"{FAKE_ENTRIES[0]}\n {FAKE_ENTRIES[1]}"})
    assert [clients.queues.account_name for clients in two.clients] == ["main", "fake1", "fake2"]


def test_the_operator_lists_dead_letters_and_requeues_in_every_account(fake_accounts: FakeAccounts) -> None:
    with connect() as conn:
        for queue in SHARDS[:3]:
            simple = conn.SimpleQueue(queue)
            simple.put(queue.name)
            simple.close()
        simple = conn.SimpleQueue(SHARDS[1])
        simple.get(timeout=2).reject()
        conn.transport.keeper.flush()
        simple.close()
    admin = QueueAdmin(Accounts(tuple(Clients(q, b) for q, b in zip(fake_accounts.azure, fake_accounts.blobs,  # type: ignore[arg-type]
                                                                     strict=True))), "t-")
    listed = {info.name: info.messages for info in admin.queues()}
    assert listed == {"work": 1, "work-shard1": 0, "work-shard2": 1, "work-shard1-dlq": 1}
    assert [d.queue for d in admin.dead_letters("work-shard1")] == ["work-shard1"]
    assert admin.requeue("work-shard1") == (1, 0)
    assert len(fake_accounts.azure[1].texts("t-work-shard1")) == 1 and not fake_accounts.azure[1].texts(
        "t-work-shard1-dlq")


def test_reconcile_peeks_each_shard_in_the_account_holding_it(fake_accounts: FakeAccounts) -> None:
    app = Celery(broker="azurequeue://", set_as_current=False)
    app.conf.broker_transport_options = {"queue_name_prefix": "t-", "storage_accounts": FAKE_ENTRIES}
    sent = datetime.now(UTC)
    for number, queue in ((0, "work"), (2, "work-shard2")):
        fake_accounts.azure[number].get_queue_client(f"t-{queue}").create_queue()
        fake_accounts.azure[number].get_queue_client(f"t-{queue}").send_message("m").inserted_on = sent
    fronts = QueueFronts(app)
    assert fronts.oldest("work") == fronts.oldest("work-shard2") == sent.timestamp()
    assert fronts.oldest("work-shard1") is None  # its account holds no such queue
    assert fake_accounts.azure[0].requests["list"] == 0  # peeking asks only the queue's own account


def test_a_further_account_that_fails_a_listing_keeps_its_shards_routable(fake_accounts: FakeAccounts) -> None:
    with connect() as worker:
        for queue in SHARDS[:3]:
            worker.SimpleQueue(queue).close()
    with connect() as client:
        registry = client.transport.registry
        registry.refresh()

        def down(*args: Any, **kwargs: Any) -> Any:
            raise ServiceRequestError("Connection refused")

        fake_accounts.azure[2].list_queues = down  # type: ignore[method-assign]
        registry.refresh()
        assert {queue for _, _, queue in registry.routes("jobs")} == {"work", "work-shard1", "work-shard2"}
        fake_accounts.azure[0].list_queues = down  # type: ignore[method-assign]
        with pytest.raises(ServiceRequestError):
            registry.refresh()


def test_a_further_account_that_does_not_answer_a_command_is_named_by_its_entry() -> None:
    refused = ServiceRequestError("HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded "
                                  "(Connection refused)")
    conf = {"broker_url": "azurequeue://", "broker_transport_options": {"storage_accounts": FAKE_ENTRIES}}
    told = str(explain(refused, conf, {"AZURE_STORAGE_CONNECTION_STRING": "AccountName=main;AccountKey=a2V5"}))
    assert told.startswith("cannot reach Azure Storage at http://127.0.0.1:1/fake1 "
                           "(FLOWCRAFT_STORAGE_ACCOUNTS entry 1): connection refused"), told
