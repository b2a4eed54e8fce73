"""The serverless entry point reads every task of a queue message: one, or each part of a bundle."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from celery import Celery

from flowcraft_celery.distributed.serverless import UnprocessableMessage, process_message, task_calls
from transports.azurequeue import wire

_queues = itertools.count()


def celery_payloads(calls: list[tuple[str, list[Any], dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The Kombu payloads Celery sends for `calls` (captured on Kombu's in-memory transport), and
    their task ids."""
    app = Celery("serverless_calls", broker="memory://")
    queue = f"serverless-calls-{next(_queues)}"
    ids = [app.send_task(name, args=args, kwargs=kwargs, queue=queue).id for name, args, kwargs in calls]
    with app.connection_for_write() as conn:
        payloads = [conn.default_channel._get(queue) for _ in calls]
    return payloads, ids


CALLS: list[tuple[str, list[Any], dict[str, Any]]] = [
    ("tasks.first", [1], {"k": "a"}),
    ("tasks.second", [], {"k": "b"}),
    ("tasks.first", [3, 4], {}),
]


def test_bundle_text_gives_one_call_per_part_in_order() -> None:
    payloads, ids = celery_payloads(CALLS)
    text = wire.encode_parts([wire.encode(payload) for payload in payloads])
    calls = task_calls(text)
    assert calls == [(name, task_id, args, kwargs, 0) for (name, args, kwargs), task_id in zip(CALLS, ids, strict=True)]
    assert len(set(ids)) == 3


def test_plain_message_text_gives_one_call() -> None:
    payloads, ids = celery_payloads(CALLS[:1])
    assert task_calls(wire.encode({"m": payloads[0]})) == [("tasks.first", ids[0], [1], {"k": "a"}, 0)]


def test_bundle_with_a_part_that_is_not_a_task_is_unprocessable() -> None:
    payloads, _ = celery_payloads(CALLS[:1])
    foreign = {"body": "e30=", "headers": {}, "properties": {"body_encoding": "base64"}}
    with pytest.raises(UnprocessableMessage, match="no Celery task header"):
        task_calls(wire.encode({"ms": [payloads[0], foreign]}))
    with pytest.raises(UnprocessableMessage):
        task_calls('{"ms": []}')


def test_process_message_runs_every_part_in_order_and_returns_their_names() -> None:
    ran: list[tuple[str, Any, str]] = []
    app = Celery("serverless_calls_runner", broker="memory://")

    @app.task(name="tasks.first", bind=True)
    def first(self: Any, *args: Any, k: str = "") -> None:
        ran.append(("first", k or list(args), self.request.id))

    @app.task(name="tasks.second", bind=True)
    def second(self: Any, k: str) -> None:
        ran.append(("second", k, self.request.id))

    payloads, ids = celery_payloads(CALLS)
    names = process_message(wire.encode_parts([wire.encode(payload) for payload in payloads]), app=app)
    assert names == ["tasks.first", "tasks.second", "tasks.first"]
    assert ran == [("first", "a", ids[0]), ("second", "b", ids[1]), ("first", [3, 4], ids[2])]
