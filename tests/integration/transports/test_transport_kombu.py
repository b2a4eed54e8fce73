"""The azurequeue transport used as a plain Kombu transport, against real Azurite."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import (
    AccountSasPermissions,
    QueueClient,
    QueueServiceClient,
    ResourceTypes,
    generate_account_sas,
)
from kombu import Consumer, Exchange, Message, Producer, Queue
from kombu.exceptions import ChannelError

from tests.integration.transports.transport_support import ROOT, connection, wait_for
from transports.azurequeue.naming import azure_queue_name
from transports.azurequeue.stats import STATS

KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
QUEUE_URL = "http://127.0.0.1:10001/devstoreaccount1"


def azure_queue(prefix: str, name: str) -> QueueClient:
    """The raw Azure client of Kombu queue `name` under `prefix`."""
    service = QueueServiceClient.from_connection_string(
        os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    )
    return service.get_queue_client(azure_queue_name(name, prefix))


def test_simple_queue_round_trip_purge_count_and_delete(unique_prefix: str) -> None:
    with connection(unique_prefix) as conn:
        queue = conn.SimpleQueue("work")
        for i in range(3):
            queue.put({"n": i})
        assert queue.qsize() == 3
        message = queue.get(timeout=10)
        assert message.payload == {"n": 0}
        message.ack()
        assert queue.queue.purge() == 2
        wait_for(lambda: queue.qsize() == 0, 10)
        queue.queue.delete()
        with pytest.raises(ChannelError):
            queue.queue.queue_declare(passive=True)
        queue.close()


def test_producer_consumer_with_odd_queue_names(unique_prefix: str) -> None:
    names = ["celery", "celery.pidbox", "celeryev.0f1e", "Under_Score", "Caps.AND.dots", "x" * 90]
    got: list[str] = []
    with connection(unique_prefix) as conn:
        queues = [Queue(name, Exchange("odd", "direct"), routing_key=name) for name in names]
        producer = Producer(conn.channel())
        for name, queue in zip(names, queues, strict=True):
            producer.publish({"to": name}, exchange=queue.exchange, routing_key=name,
                             declare=[queue])
        def on_message(body: dict[str, str], message: Message) -> None:
            got.append(body["to"])
            message.ack()

        with Consumer(conn, queues, callbacks=[on_message]):
            deadline = time.monotonic() + 30
            while len(got) < len(names) and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=1)
        for queue in queues:
            queue(conn.default_channel).delete()
    assert sorted(got) == sorted(names)


def test_unacked_message_stays_hidden_while_held_and_is_gone_after_ack(
    unique_prefix: str,
) -> None:
    with connection(unique_prefix, visibility_timeout=2) as holder, connection(
        unique_prefix, visibility_timeout=2
    ) as other:
        holder.SimpleQueue("held").put("payload")
        message = holder.SimpleQueue("held").get(timeout=10)
        time.sleep(7)
        with pytest.raises(other.SimpleQueue("held").Empty):
            other.SimpleQueue("held").get_nowait()
        message.ack()
        time.sleep(3)
        with pytest.raises(other.SimpleQueue("held").Empty):
            other.SimpleQueue("held").get_nowait()
        other.SimpleQueue("held").queue.delete()


HOLD_AND_WAIT = """
import sys, time
from tests.integration.transports.transport_support import connection
conn = connection(sys.argv[1], visibility_timeout=2)
print(conn.SimpleQueue("orphan").get(timeout=10).payload, flush=True)
time.sleep(60)
"""


def test_unacked_message_of_a_killed_consumer_reappears(unique_prefix: str) -> None:
    with connection(unique_prefix) as other:
        other.SimpleQueue("orphan").put("payload")
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_AND_WAIT, unique_prefix], cwd=ROOT, stdout=subprocess.PIPE,
            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "payload"
        finally:
            holder.kill()
            holder.wait(10)
        message = other.SimpleQueue("orphan").get(timeout=15)
        assert message.payload == "payload"
        assert message.delivery_info["redelivered"] is True
        message.ack()
        other.SimpleQueue("orphan").queue.delete()


def test_reject_requeue_is_visible_at_once_and_reject_moves_to_dlq(unique_prefix: str) -> None:
    with connection(unique_prefix, visibility_timeout=60) as conn:
        queue = conn.SimpleQueue("rejects")
        queue.put("again")
        queue.get(timeout=10).reject(requeue=True)
        message = queue.get(timeout=5)
        assert message.payload == "again"
        message.reject(requeue=False)
        dead = conn.SimpleQueue("rejects-dlq").get(timeout=10)
        assert dead.payload == "again"
        assert dead.headers["x-dead-letter-reason"] == "rejected by the consumer"
        assert dead.headers["x-dead-letter-queue"] == "rejects"
        dead.ack()
        with pytest.raises(queue.Empty):
            queue.get(timeout=3)
        queue.queue.delete()
        conn.SimpleQueue("rejects-dlq").queue.delete()


def test_poison_body_and_too_many_deliveries_go_to_dlq(unique_prefix: str) -> None:
    with connection(unique_prefix, max_delivery_count=2) as conn:
        queue = conn.SimpleQueue("poison")
        queue.put("bounced")
        azure_queue(unique_prefix, "poison").send_message("this is not an envelope")
        queue.put("fine")
        seen: list[str] = []
        while "fine" not in seen or seen.count("bounced") < 2:
            message = queue.get(timeout=10)
            seen.append(message.payload)
            if message.payload == "bounced":
                message.reject(requeue=True)
            else:
                message.ack()
        assert seen.count("bounced") == 2 and seen.count("fine") == 1
        dlq = conn.SimpleQueue("poison-dlq")
        dead_letters = {}
        for _ in range(2):
            dead = dlq.get(timeout=10)
            dead_letters[dead.headers["x-dead-letter-reason"]] = dead.body
            dead.ack()
        undecodable = [body for reason, body in dead_letters.items()
                       if reason.startswith("undecodable body")]
        assert undecodable == [b"this is not an envelope"]
        assert "delivered 3 times (limit 2)" in dead_letters
        with pytest.raises(queue.Empty):
            queue.get(timeout=2)
        queue.queue.delete()
        dlq.queue.delete()


def test_large_body_goes_through_a_blob_that_is_deleted_on_ack(unique_prefix: str) -> None:
    blob_service = BlobServiceClient.from_connection_string(
        os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    )
    container = blob_service.get_container_client("kombu-large-messages")
    name = azure_queue_name("big", unique_prefix)
    body = "y" * 300_000
    with connection(unique_prefix) as conn:
        queue = conn.SimpleQueue("big")
        queue.put(body)
        assert len(list(container.list_blobs(name_starts_with=f"{name}/"))) == 1
        message = queue.get(timeout=10)
        assert message.payload == body
        message.ack()
        wait_for(lambda: not list(container.list_blobs(name_starts_with=f"{name}/")), 10)
        queue.queue.delete()


def test_eta_message_is_invisible_until_due(unique_prefix: str) -> None:
    with connection(unique_prefix) as conn:
        queue = conn.SimpleQueue("later")
        eta = datetime.now(UTC) + timedelta(seconds=6)
        queue.put("due", headers={"eta": eta.isoformat()})
        queue.put("now")
        assert queue.get(timeout=10).payload == "now"
        with pytest.raises(queue.Empty):
            queue.get(timeout=4)
        message = queue.get(timeout=15)
        assert message.payload == "due"
        assert datetime.now(UTC) >= eta - timedelta(seconds=0.5)
        message.ack()
        queue.queue.delete()


def test_message_due_beyond_its_visibility_hops_until_due(unique_prefix: str) -> None:
    with connection(unique_prefix) as conn:
        queue = conn.SimpleQueue("hops")
        queue.put("warm-up")
        queue.get(timeout=10).ack()
        payload = {
            "body": "ImhvcHBlZCI=", "content-type": "application/json",
            "content-encoding": "utf-8", "headers": {},
            "properties": {"body_encoding": "base64", "delivery_info": {}},
        }
        due = time.time() + 5
        azure_queue(unique_prefix, "hops").send_message(
            json.dumps({"m": payload, "due": due})
        )
        with pytest.raises(queue.Empty):
            queue.get(timeout=3)
        message = queue.get(timeout=15)
        assert message.payload == "hopped"
        assert time.time() >= due - 0.5
        message.ack()
        queue.queue.delete()


def test_fanout_topic_and_direct_route_between_connections(unique_prefix: str) -> None:
    fan, topic, direct = Exchange("fx", "fanout"), Exchange("tx", "topic"), Exchange("dx")
    with connection(unique_prefix) as consumer_side, connection(unique_prefix) as publisher:
        channel = consumer_side.channel()
        bound = [
            Queue("fan-a", fan), Queue("fan-b", fan),
            Queue("topic-a", topic, routing_key="a.#"), Queue("direct-k", direct, routing_key="k"),
        ]
        for queue in bound:
            queue(channel).declare()
        producer = Producer(publisher.channel())
        producer.publish("to all", exchange=fan, declare=[fan])
        producer.publish("a match", exchange=topic, routing_key="a.b.c", declare=[topic])
        producer.publish("no match", exchange=topic, routing_key="b.c", declare=[topic])
        producer.publish("by key", exchange=direct, routing_key="k", declare=[direct])
        got = {}
        for queue in bound:
            message = queue(channel).get(no_ack=True)
            got[queue.name] = message.payload if message else None
        assert got == {
            "fan-a": "to all", "fan-b": "to all", "topic-a": "a match", "direct-k": "by key",
        }
        assert bound[2](channel).get(no_ack=True) is None
        for queue in bound:
            queue(channel).delete()


def test_abandoned_auto_delete_queue_is_reaped_by_a_lister(unique_prefix: str) -> None:
    gone = connection(unique_prefix, queue_heartbeat_interval=1)
    Queue("transient", Exchange("fx2", "fanout"), auto_delete=True)(gone.channel()).declare()
    client = azure_queue(unique_prefix, "transient")
    assert (client.get_queue_properties().metadata or {})["kombuname"] == "transient"
    time.sleep(4)
    with connection(unique_prefix, queue_heartbeat_interval=1) as lister:
        lister.transport.registry.refresh()
        assert lister.transport.registry.routes("fx2") == []
    with pytest.raises(ResourceNotFoundError):
        client.get_queue_properties()


def test_idle_consumer_backs_off_to_the_maximum_interval(unique_prefix: str) -> None:
    names = ["idle-a", "idle-b", "idle-c"]
    with connection(unique_prefix, max_polling_interval=2.0) as conn:
        queues = [Queue(name) for name in names]
        with Consumer(conn, queues, callbacks=[lambda body, m: m.ack()]):
            end = time.monotonic() + 8
            while time.monotonic() < end:
                with pytest.raises(TimeoutError):
                    conn.drain_events(timeout=max(0.01, end - time.monotonic()))
            before = STATS.snapshot().get("queue.receive", 0)
            end = time.monotonic() + 10
            while time.monotonic() < end:
                with pytest.raises(TimeoutError):
                    conn.drain_events(timeout=max(0.01, end - time.monotonic()))
            polls = STATS.snapshot().get("queue.receive", 0) - before
            assert polls <= len(names) * (10 / 2.0 + 1)
            assert polls >= len(names) * 3
            with connection(unique_prefix) as other:
                other.SimpleQueue("idle-b").put("wake up")
            started = time.monotonic()
            conn.drain_events(timeout=10)
            assert time.monotonic() - started <= 2.5
        for queue in queues:
            queue(conn.default_channel).delete()


@pytest.mark.parametrize("form", ["account key", "sas"])
def test_account_url_forms_work_and_never_show_the_secret(unique_prefix: str, form: str) -> None:
    if form == "account key":
        secret = KEY
    else:
        secret = generate_account_sas(
            "devstoreaccount1", KEY, ResourceTypes(service=True, container=True, object=True),
            AccountSasPermissions(read=True, write=True, delete=True, list=True, add=True,
                                  create=True, update=True, process=True),
            expiry=datetime.now(UTC) + timedelta(hours=1),
        )
    url = f"azurequeue://{secret}@{QUEUE_URL}"
    from kombu import Connection

    with Connection(url, transport_options={"queue_name_prefix": unique_prefix}) as conn:
        assert secret not in repr(conn)
        assert secret not in conn.as_uri()
        assert conn.as_uri() == f"azurequeue://**@{QUEUE_URL}"
        queue = conn.SimpleQueue("creds")
        queue.put("ok")
        message = queue.get(timeout=10)
        assert message.payload == "ok"
        message.ack()
        queue.queue.delete()
