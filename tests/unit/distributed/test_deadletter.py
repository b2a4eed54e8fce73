"""What makes a node task's arguments a node message, and why not (the reason a poison message
is dead-lettered with)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery

from flowcraft_celery.distributed.node.deadletter import node_message_problem, payload_problem, source_queue

GOOD: dict[str, Any] = {"run": "r1", "bp": "b", "ver": "1", "node": "n", "it": 0, "value": None, "attempt": 1,
                        "dyn": False, "sent": 1.5}


def test_node_messages_have_no_problem() -> None:
    assert node_message_problem((), {"msg": GOOD}) is None
    assert node_message_problem((), {"msgs": [GOOD, dict(GOOD, node="m")]}) is None
    assert payload_problem(dict(GOOD, done={"output": 1}, due=None, writes=2)) is None


@pytest.mark.parametrize(("args", "kwargs", "reason"), [
    ((GOOD,), {}, "no positional arguments"),
    ((), {"msg": GOOD, "extra": 1}, "argument(s) 'extra'"),
    ((), {}, "exactly one of msg"),
    ((), {"msg": GOOD, "msgs": [GOOD]}, "exactly one of msg"),
    ((), {"msg": "text"}, "must be an object, not str"),
    ((), {"msg": {"not": "a node message"}}, "field 'run' must be non-empty text"),
    ((), {"msg": dict(GOOD, bp="")}, "field 'bp' must be non-empty text"),
    ((), {"msg": dict(GOOD, it="0")}, "field 'it' must be a whole number >= 0"),
    ((), {"msg": dict(GOOD, attempt=0)}, "field 'attempt' must be a whole number >= 1"),
    ((), {"msg": dict(GOOD, it=True)}, "field 'it'"),
    ((), {"msg": dict(GOOD, sent="now")}, "field 'sent' must be a number"),
    ((), {"msg": dict(GOOD, resume=[1])}, "field 'resume' must be an object"),
    ((), {"msgs": []}, "msgs must be a non-empty list"),
    ((), {"msgs": GOOD}, "msgs must be a non-empty list"),
    ((), {"msgs": [GOOD, dict(GOOD, node=7)]}, "msgs[1]: field 'node'"),
])
def test_each_problem_is_named(args: tuple[Any, ...], kwargs: dict[str, Any], reason: str) -> None:
    problem = node_message_problem(args, kwargs)
    assert problem is not None and reason in problem, problem


@pytest.mark.parametrize(("routing_key", "queue"), [("tasks", "tasks"), ("tasks-dlq", "tasks"), (None, "dflt")])
def test_the_source_of_a_message_re_driven_from_a_dead_letter_queue_is_the_queue_it_belongs_to(
        routing_key: str | None, queue: str) -> None:
    app = Celery("t", set_as_current=False)
    app.conf.task_default_queue = "dflt"
    task = SimpleNamespace(request=SimpleNamespace(delivery_info={"routing_key": routing_key}))
    assert source_queue(app, task) == queue  # type: ignore[arg-type]
