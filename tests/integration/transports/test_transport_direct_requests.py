"""The transport's own signed requests against Azurite: what they send, receive and delete is what
the SDK sees, and every answer they do not expect leaves the request to the SDK."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest
from azure.storage.queue import QueueClient

from transports.azurequeue.directqueue import DirectQueue
from transports.azurequeue.httpenv import HttpEnvironment
from transports.azurequeue.stats import STATS

pytestmark = pytest.mark.integration

TEXT = '{"body": "<b>&amp; \'quoted\' \\"twice\\"", "plain": "é ü 😀 \\u0001"}'


@pytest.fixture
def queue(unique_name: Callable[[str], str]) -> Iterator[QueueClient]:
    client = QueueClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"], unique_name("direct"))
    client.create_queue()
    try:
        yield client
    finally:
        client.delete_queue()


def direct_for(client: QueueClient) -> DirectQueue:
    direct = DirectQueue.for_client(client, HttpEnvironment())
    assert direct is not None, "Azurite's account key should take the direct path"
    return direct


def test_what_is_sent_directly_is_what_the_sdk_receives_and_the_other_way_round(queue: QueueClient) -> None:
    direct = direct_for(queue)
    assert direct.send(TEXT)
    (seen,) = queue.peek_messages(max_messages=5)
    assert seen.content == TEXT
    queue.send_message(TEXT + " from the SDK")
    received = direct.receive(32, 30)
    assert received is not None
    assert [m.content for m in received] == [TEXT, TEXT + " from the SDK"]
    assert all(m.id and m.pop_receipt and m.dequeue_count == 1 for m in received)
    assert queue.peek_messages(max_messages=5) == [], "received messages must be hidden"
    for message in received:
        assert direct.delete(message.id, message.pop_receipt)
    assert queue.get_queue_properties().approximate_message_count == 0


def test_a_hidden_send_appears_when_due(queue: QueueClient) -> None:
    direct = direct_for(queue)
    assert direct.send("later", visibility_timeout=2, ttl=60)
    assert direct.receive(1, 30) == []
    time.sleep(2.5)
    received = direct.receive(1, 30)
    assert received is not None and [m.content for m in received] == ["later"]


def test_what_only_the_sdk_can_explain_is_left_to_it(queue: QueueClient) -> None:
    direct = direct_for(queue)
    assert direct.send("held")
    received = direct.receive(1, 30)
    assert received is not None
    (message,) = received
    assert direct.delete(message.id, "AAAAAAAAAAAAAAAAAAAAAA==") is False, "a wrong pop receipt deleted it"
    assert direct.delete(message.id, message.pop_receipt), "a refused request must not stop the next one"
    gone = QueueClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"], queue.queue_name + "x")
    assert direct_for(gone).send("nowhere") is False
    assert direct_for(gone).receive(1, 30) is None


def test_a_refused_signature_leaves_every_request_to_the_sdk_for_a_while(
    queue: QueueClient, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = DirectQueue(queue.url, queue.account_name or "", b"not the account key", queue.api_version, None)
    sent = STATS.snapshot().get("queue.send", 0)
    assert wrong.send("x") is False
    assert wrong.send("x") is False and wrong.receive(1, 30) is None
    assert STATS.snapshot().get("queue.send", 0) == sent + 1, "a refused path kept sending"
    assert "refused a request signed by the transport (403)" in caplog.text
    assert queue.peek_messages() == []
