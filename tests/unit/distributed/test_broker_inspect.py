"""The operator helpers over the transport's envelopes: queue kinds and the Celery message inside."""

from __future__ import annotations

import base64
import json

from flowcraft_celery.distributed.ops.broker_inspect import QueueAdmin, QueueInfo, _celery_parts, queue_kind


def test_queue_kinds_follow_the_transports_and_celerys_names() -> None:
    assert [queue_kind(n) for n in ("flowcraft", "flowcraft-dlq", "celeryev.1234", "w1@host.celery.pidbox",
                                    "5ffe.reply.celery.pidbox")] == ["tasks", "dead-letter", "events", "control",
                                                                      "control"]
    assert QueueInfo("heavy-dlq", "p-heavy-dlq", "dead-letter").dead_letter_of == "heavy"
    assert QueueInfo("heavy", "p-heavy", "tasks").dead_letter_of is None


def test_either_a_queue_or_its_dead_letter_queue_names_the_dead_letter_queue() -> None:
    assert QueueAdmin.dead_letter_queue("tasks") == QueueAdmin.dead_letter_queue("tasks-dlq") == "tasks-dlq"


def test_the_task_name_id_and_arguments_are_read_from_a_base64_body() -> None:
    body = base64.b64encode(json.dumps([[1], {"msg": {"run": "r", "node": "n"}}, {}]).encode()).decode()
    payload = {"body": body, "headers": {"task": "flowcraft.node.x", "id": "t-1"},
               "properties": {"body_encoding": "base64"}}
    assert _celery_parts(payload) == ("flowcraft.node.x", "t-1", [1], {"msg": {"run": "r", "node": "n"}})


def test_a_body_that_is_not_a_celery_message_still_gives_its_headers() -> None:
    payload = {"body": "not base64 json!", "headers": {"task": "t"}, "properties": {"body_encoding": "base64"}}
    assert _celery_parts(payload)[:2] == ("t", None)
