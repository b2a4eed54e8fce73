"""Messages no worker may execute go to their queue's dead-letter queue, with the reason.

Poison messages: a task message that is a valid Celery message but not a node message (other
arguments, fields missing or of the wrong type: `core.message.task_messages` says which), a
node message the run does not expect, a node message of a run that does not exist,
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

from flowcraft_celery.distributed.core.message import NodeMessage
from flowcraft_celery.model.ids import printable_id
from transports.azurequeue import DEAD_LETTER_SUFFIX, dead_letter_queue_name

logger = logging.getLogger("flowcraft.deadletter")


def source_queue(app: Celery, task: Task) -> str:
    """The queue the task's message came from (the default queue when the request does not say).

    A message re-driven from a dead-letter queue (`dlq requeue`) still carries that queue as its
    routing key: its source is the queue the dead-letter queue belongs to."""
    info = getattr(task.request, "delivery_info", None) or {}
    queue = str(info.get("routing_key") or info.get("queue") or app.conf.task_default_queue)
    while queue.endswith(DEAD_LETTER_SUFFIX) and len(queue) > len(DEAD_LETTER_SUFFIX):
        queue = queue[: -len(DEAD_LETTER_SUFFIX)]
    return queue


def dead_letter(app: Celery, task: Task, message: NodeMessage, reason: str) -> None:
    """Send `message` to the dead-letter queue of the queue it came from."""
    dead_letter_arguments(app, task, (), {"msg": message.to_wire()}, reason)


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
