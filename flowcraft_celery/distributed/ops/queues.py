"""The deployment's queues for operators: counts from Azure, delayed counts from the publish index.

`queue_admin(app)` opens the transport's `QueueAdmin` (`distributed/ops/broker_inspect.py`) for the
app's broker URL and transport options; `queue_rows(app)` lists every queue of the deployment's
prefix (task, dead-letter, control and event queues) with Azure's approximate count, how many of
those are delayed (`distributed/runs/delayed.py`) and so how many are visible: ready to be taken, or
held by a worker right now (Azure does not tell those two apart). By default only the task and
dead-letter queues, where work waits.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from celery import Celery

from flowcraft_celery.distributed.ops.broker_inspect import QueueAdmin, QueueInfo
from flowcraft_celery.distributed.runs.delayed import index_for
from flowcraft_celery.errors import FlowcraftError


class NotAzureQueueBroker(FlowcraftError, RuntimeError):
    """The app's broker is not `azurequeue://`, so there are no Azure queues to look at."""


@dataclass(frozen=True)
class QueueRow:
    """One queue with its counts."""

    info: QueueInfo
    delayed: int
    #: When the oldest visible message was sent (epoch seconds); None when none is, or not looked up.
    oldest: float | None = None

    @property
    def visible(self) -> int | None:
        """Messages not delayed: ready, or held by a worker (approximate, like Azure's count)."""
        return None if self.info.messages is None else max(0, self.info.messages - self.delayed)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (`queues --json`)."""
        return {"queue": self.info.name, "azureName": self.info.azure_name, "kind": self.info.kind,
                "messages": self.info.messages, "visible": self.visible, "delayed": self.delayed,
                "transient": self.info.transient, "deadLetterOf": self.info.dead_letter_of}


def queue_admin(app: Celery) -> QueueAdmin:
    """The queue admin of the app's broker (NotAzureQueueBroker for another broker)."""
    connection = app.connection_for_read()
    if connection.transport.driver_type != "azurequeue":
        raise NotAzureQueueBroker(f"the broker is {connection.as_uri()!r}, not azurequeue://: "
                                  "use the broker's own tools to see its queues")
    return QueueAdmin.from_connection(connection)


#: The queues work waits in; control (pidbox, reply) and event queues are Celery's plumbing, and
#: reply and event queues have random names (no metric label should).
WORK_KINDS = ("tasks", "dead-letter")


def queue_rows(app: Celery, admin: QueueAdmin | None = None, now: float | None = None,
               kinds: Collection[str] | None = WORK_KINDS, fronts: bool = False) -> list[QueueRow]:
    """The deployment's queues of `kinds` (None: all) with approximate, visible and delayed counts;
    with `fronts`, also when each task queue's oldest visible message was sent (one peek each)."""
    admin = admin or queue_admin(app)
    index = index_for(app.conf)
    now = time.time() if now is None else now
    rows = []
    for info in admin.queues(kinds=kinds):
        task_queue = info.kind == "tasks"
        oldest = admin.oldest_visible(info.name) if fronts and task_queue and info.messages else None
        rows.append(QueueRow(info, index.count(info.name, now) if task_queue else 0, oldest))
    return rows
