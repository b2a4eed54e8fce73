"""Evidence that a node message is still on its queue: when the oldest visible message was put there.

Azure Queue Storage delivers roughly in insertion order, and `peek_messages` shows the front of
a queue without taking it. A pending node message sent at `sent` is still queued when the
queue's oldest visible message is not younger than it: it waits behind (or is) that message.
One peek per queue per reconcile pass; transports that cannot peek give no evidence.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from flowcraft_celery.stores.guard import log_level
from transports.azurequeue import Accounts, azure_queue_name

logger = logging.getLogger("flowcraft.reconcile")

#: Seconds of clock difference between the sender and the queue service tolerated.
CLOCK_SLACK = 2.0


class QueueFronts:
    """The insertion time of each queue's oldest visible message, looked up once per queue."""

    def __init__(self, app: Celery) -> None:
        self._app = app
        self._fronts: dict[str, float | None] = {}
        self._queues: Accounts | None = None
        self._prefix = ""

    def _client(self, queue: str) -> Any:
        """An Azure queue client for a Celery queue (the transport's naming, credentials and storage
        account holding the queue), or None when the broker is not `azurequeue://`."""
        url = str(self._app.conf.broker_url or "")
        if not url.startswith("azurequeue://"):
            return None
        if self._queues is None:
            options = dict(self._app.conf.broker_transport_options or {})
            self._prefix = str(options.get("queue_name_prefix") or "")
            self._queues = Accounts.build(url, options)
        return self._queues.of(queue).queues.get_queue_client(azure_queue_name(queue, self._prefix))

    def oldest(self, queue: str) -> float | None:
        """When the oldest visible message of `queue` was inserted (epoch seconds); None when no
        message is visible or the transport cannot tell."""
        if queue not in self._fronts:
            front: float | None = None
            try:
                client = self._client(queue)
                if client is not None:
                    peeked = list(client.peek_messages(max_messages=1))
                    if peeked and peeked[0].inserted_on is not None:
                        front = peeked[0].inserted_on.timestamp()
            except Exception as exc:  # no evidence: the caller treats the message as not seen queued
                logger.log(log_level(exc, logging.WARNING), "could not peek queue %s: %s", queue, exc)
            self._fronts[queue] = front
        return self._fronts[queue]

    def still_queued(self, queue: str, sent: float) -> bool:
        """Whether a message sent at `sent` to `queue` waits there still (see the module docstring)."""
        front = self.oldest(queue)
        return front is not None and front <= sent + CLOCK_SLACK
