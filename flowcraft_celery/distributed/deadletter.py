"""Putting a node message on its queue's dead-letter queue, with the reason, instead of running it.

Used for messages no worker may execute: a node message of a run that does not exist, a node
that keeps killing its worker process. The message goes to `<queue>-dlq` (the transport's
naming) with `x-dead-letter-reason` and `x-dead-letter-queue` headers, as the transport's own
dead letters carry them, and the original is acknowledged.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task

from transports.azurequeue.naming import dead_letter_queue_name

logger = logging.getLogger("flowcraft.deadletter")


def source_queue(app: Celery, task: Task) -> str:
    """The queue the task's message came from (the default queue when the request does not say)."""
    info = getattr(task.request, "delivery_info", None) or {}
    return str(info.get("routing_key") or info.get("queue") or app.conf.task_default_queue)


def dead_letter(app: Celery, task: Task, message: dict[str, Any], reason: str) -> None:
    """Send `message` (a node payload) to the dead-letter queue of the queue it came from."""
    queue = source_queue(app, task)
    dlq = dead_letter_queue_name(queue)
    app.send_task(task.name, kwargs={"msg": message}, queue=dlq,
                  headers={"x-dead-letter-reason": reason, "x-dead-letter-queue": queue})
    logger.warning("node message of run %s moved to %s: %s", message.get("run"), dlq, reason)
