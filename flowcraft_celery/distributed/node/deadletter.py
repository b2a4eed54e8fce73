"""Messages no worker may execute go to their queue's dead-letter queue, with the reason.

Poison messages: a task message that is a valid Celery message but not a node message (other
arguments, fields missing or of the wrong type), a node message of a run that does not exist,
a node that keeps killing its worker process. The message goes to `<queue>-dlq` (the
transport's naming) with `x-dead-letter-reason` and `x-dead-letter-queue` headers, as the
transport's own dead letters carry them (`dlq show` reads either), under the original task id,
and the original is acknowledged. A WARNING names the reason (and the run, when the message
names one).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from celery import Celery, Task

from flowcraft_celery.model.ids import printable_id
from transports.azurequeue import DEAD_LETTER_SUFFIX, dead_letter_queue_name

logger = logging.getLogger("flowcraft.deadletter")

#: Fields every node message carries: non-empty text.
_TEXT_FIELDS = ("run", "bp", "node")
#: Optional whole-number fields and their smallest value.
_COUNT_FIELDS = {"it": 0, "attempt": 1, "mismatches": 0, "writes": 0}
#: Optional fields that are times (seconds since the epoch).
_TIME_FIELDS = ("sent", "due", "wakeAt")
#: Optional fields that are objects (or null).
_OBJECT_FIELDS = ("done", "resume", "child")


def payload_problem(value: Any) -> str | None:
    """Why `value` is not a node payload a worker can handle; None when it is one."""
    if not isinstance(value, dict):
        return f"a node payload must be an object, not {type(value).__name__}"
    for field in _TEXT_FIELDS:
        if not isinstance(value.get(field), str) or not value[field]:
            return f"field {field!r} must be non-empty text, got {value.get(field)!r:.80}"
    for field, least in _COUNT_FIELDS.items():
        if field in value and (isinstance(value[field], bool) or not isinstance(value[field], int)
                               or value[field] < least):
            return f"field {field!r} must be a whole number >= {least}, got {value[field]!r:.80}"
    for field in _TIME_FIELDS:
        if value.get(field) is not None and (isinstance(value[field], bool)
                                             or not isinstance(value[field], (int, float))):
            return f"field {field!r} must be a number, got {value[field]!r:.80}"
    for field in _OBJECT_FIELDS:
        if value.get(field) is not None and not isinstance(value[field], dict):
            return f"field {field!r} must be an object, got {value[field]!r:.80}"
    return None


def node_message_problem(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    """Why a node task's arguments are not a node message (`msg=` one payload, or `msgs=` a
    non-empty list of them); None when they are one."""
    if args:
        return f"a node task takes no positional arguments, got {len(args)}"
    unknown = sorted(set(kwargs) - {"msg", "msgs"})
    if unknown:
        return f"unknown node task argument(s) {', '.join(map(repr, unknown))} (expected msg or msgs)"
    if ("msg" in kwargs) == ("msgs" in kwargs):
        return "a node task takes exactly one of msg (one payload) or msgs (a list of payloads)"
    if "msg" in kwargs:
        return payload_problem(kwargs["msg"])
    members = kwargs["msgs"]
    if not isinstance(members, list) or not members:
        return f"msgs must be a non-empty list of node payloads, got {members!r:.80}"
    for index, member in enumerate(members):
        problem = payload_problem(member)
        if problem is not None:
            return f"msgs[{index}]: {problem}"
    return None


def source_queue(app: Celery, task: Task) -> str:
    """The queue the task's message came from (the default queue when the request does not say).

    A message re-driven from a dead-letter queue (`dlq requeue`) still carries that queue as its
    routing key: its source is the queue the dead-letter queue belongs to."""
    info = getattr(task.request, "delivery_info", None) or {}
    queue = str(info.get("routing_key") or info.get("queue") or app.conf.task_default_queue)
    while queue.endswith(DEAD_LETTER_SUFFIX) and len(queue) > len(DEAD_LETTER_SUFFIX):
        queue = queue[: -len(DEAD_LETTER_SUFFIX)]
    return queue


def dead_letter(app: Celery, task: Task, message: dict[str, Any], reason: str) -> None:
    """Send `message` (a node payload) to the dead-letter queue of the queue it came from."""
    dead_letter_arguments(app, task, (), {"msg": message}, reason)


def dead_letter_arguments(app: Celery, task: Task, args: Sequence[Any], kwargs: Mapping[str, Any],
                          reason: str) -> None:
    """Send a task message with these arguments to the dead-letter queue of the queue the task's
    message came from, with the reason in its headers."""
    queue = source_queue(app, task)
    dlq = dead_letter_queue_name(queue)
    app.send_task(task.name, args=list(args), kwargs=dict(kwargs), queue=dlq, task_id=task.request.id,
                  headers={"x-dead-letter-reason": reason, "x-dead-letter-queue": queue})
    run = kwargs.get("msg", {}).get("run") if isinstance(kwargs.get("msg"), dict) else None
    logger.warning("%s moved to %s: %s", f"node message of run {printable_id(run)}" if run else f"{task.name} message",
                   dlq, reason)
