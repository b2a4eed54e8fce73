"""The node message's wire form: what a node task's arguments must be (the reason a poison message is
dead-lettered with), and that messages and ledger entries of the dict-based format read and write the same."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery

from flowcraft_celery.distributed.core.message import MessageError, NodeMessage, task_messages
from flowcraft_celery.distributed.node.deadletter import source_queue
from flowcraft_celery.stores.base import MISSING

GOOD: dict[str, Any] = {"run": "r1", "bp": "b", "ver": "1", "node": "n", "it": 0, "value": None, "attempt": 1,
                        "dyn": False, "sent": 1.5}


def test_node_messages_read_as_themselves() -> None:
    assert [m.node_id for m in task_messages((), {"msg": GOOD})] == ["n"]
    assert [m.node_id for m in task_messages((), {"msgs": [GOOD, dict(GOOD, node="m")]})] == ["n", "m"]
    message = NodeMessage.from_wire(dict(GOOD, done={"output": 1}, due=None, writes=2))
    assert (message.done, message.due, message.writes) == ({"output": 1}, None, 2)


@pytest.mark.parametrize("wire", [
    GOOD,  # a successor as published
    {**GOOD, "sent": 2.0, "due": 7.0, "wake": True, "wakeAt": 7.0, "value": {"in": 1}},  # a sleep's wake-up
    {**GOOD, "childRun": "r1.n.0", "attempt": 2},  # a subflow's ledger entry
    {**GOOD, "webhook": "http://h/webhooks/r1/n/0/s", "resume": {"action": None, "output": {"b": 1}}},
    {**GOOD, "done": {"output": 1, "action": None, "dynamicNodes": [], "decision": {}}, "writes": 1},
    {**GOOD, "mismatches": 2, "prepared": None},  # a null prep result is carried, not dropped
    {**GOOD, "child": {"runId": "c", "status": "completed"}, "ver": None},
    {**GOOD, "addedLater": [1, 2]},  # a key of a later version survives the round trip
])
def test_a_message_of_the_dict_based_format_is_written_back_byte_for_byte(wire: dict[str, Any]) -> None:
    assert json.dumps(NodeMessage.from_wire(wire).to_wire()) == json.dumps(wire)


def test_unset_keys_are_not_written_and_prepared_is_missing_until_carried() -> None:
    message = NodeMessage(run_id="r", blueprint_id="b", version="1", node_id="n")
    assert message.to_wire() == {"run": "r", "bp": "b", "ver": "1", "node": "n", "it": 0, "value": None,
                                 "attempt": 1, "dyn": False}
    assert message.prepared is MISSING
    assert message.sent_at(5.0, 9.0).to_wire()["due"] == 9.0
    assert "due" not in message.sent_at(5.0, 9.0).sent_at(6.0).to_wire()


@pytest.mark.parametrize(("args", "kwargs", "reason", "key"), [
    ((GOOD,), {}, "no positional arguments", None),
    ((), {"msg": GOOD, "extra": 1}, "argument(s) 'extra'", None),
    ((), {}, "exactly one of msg", None),
    ((), {"msg": GOOD, "msgs": [GOOD]}, "exactly one of msg", None),
    ((), {"msg": "text"}, "must be an object, not str", None),
    ((), {"msg": {"not": "a node message"}}, "field 'run' must be non-empty text", "run"),
    ((), {"msg": dict(GOOD, bp="")}, "field 'bp' must be non-empty text", "bp"),
    ((), {"msg": dict(GOOD, it="0")}, "field 'it' must be a whole number >= 0", "it"),
    ((), {"msg": dict(GOOD, attempt=0)}, "field 'attempt' must be a whole number >= 1", "attempt"),
    ((), {"msg": dict(GOOD, it=True)}, "field 'it'", "it"),
    ((), {"msg": dict(GOOD, sent="now")}, "field 'sent' must be a number", "sent"),
    ((), {"msg": dict(GOOD, resume=[1])}, "field 'resume' must be an object", "resume"),
    ((), {"msg": dict(GOOD, dyn="yes")}, "field 'dyn' must be true or false", "dyn"),
    ((), {"msg": dict(GOOD, childRun=3)}, "field 'childRun' must be non-empty text", "childRun"),
    ((), {"msgs": []}, "msgs must be a non-empty list", "msgs"),
    ((), {"msgs": GOOD}, "msgs must be a non-empty list", "msgs"),
    ((), {"msgs": [GOOD, dict(GOOD, node=7)]}, "msgs[1]: field 'node'", "node"),
])
def test_each_problem_is_named(args: tuple[Any, ...], kwargs: dict[str, Any], reason: str, key: str | None) -> None:
    with pytest.raises(MessageError) as caught:
        task_messages(args, kwargs)
    assert reason in str(caught.value)
    assert caught.value.key == key


@pytest.mark.parametrize(("routing_key", "queue"), [("tasks", "tasks"), ("tasks-dlq", "tasks"), (None, "dflt")])
def test_the_source_of_a_message_re_driven_from_a_dead_letter_queue_is_the_queue_it_belongs_to(
        routing_key: str | None, queue: str) -> None:
    app = Celery("t", set_as_current=False)
    app.conf.task_default_queue = "dflt"
    task = SimpleNamespace(request=SimpleNamespace(delivery_info={"routing_key": routing_key}))
    assert source_queue(app, task) == queue  # type: ignore[arg-type]
