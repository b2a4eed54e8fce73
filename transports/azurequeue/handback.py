"""Warm shutdown of a Celery worker: hand back at once the messages it holds but has not started.

A worker prefetches (Celery's default: 4 messages per pool process). On a warm shutdown Celery
closes the pool, waits for the running tasks, and only then closes the connection, which is
when a transport gives the unacked messages back: the prefetched ones stay invisible to other
workers until the running tasks end. This worker bootstep runs when the worker begins a warm
(or cold) shutdown, after the pool stopped taking tasks, and rejects with requeue every request
that was never handed to the pool: its message is visible again at once (visibility 0) for
another worker. Requests already in a pool process finish and are acked as usual.

An app adds it with `app.steps["worker"].add(HandBackUnstarted)`, or with `install` connected
to Celery's `celeryd_init` signal (only for a broker `azurequeue://`). This is the transport's
one module that imports Celery; the transport itself never imports it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from celery.worker import state

logger = logging.getLogger(__name__)


class HandBackUnstarted(bootsteps.StartStopStep):
    """Reject (requeue) the worker's reserved and scheduled requests that never reached the pool.

    A worker step after the pool: the worker closes its steps in order when it shuts down, so
    this runs once the pool takes no more tasks and before the consumer forgets its requests.
    """

    requires = ("celery.worker.components:Pool",)

    def close(self, w: Any) -> None:
        """Give back every message whose request was never handed to a pool process."""
        handed = 0
        for request in [*state.reserved_requests, *state.scheduled_requests]:
            if request.acknowledged or request._apply_result is not None or request.time_start:
                continue
            try:
                request.reject(requeue=True)
            except Exception as exc:
                logger.warning("Could not hand back task %s: %r", request.id, exc)
                continue
            handed += 1
        if handed:
            logger.info("Handed %d unstarted task message(s) back to the queue", handed)


def install(instance: Any = None, **kwargs: Any) -> None:
    """Add the step to a starting worker whose broker is `azurequeue://` (`celeryd_init`)."""
    app = getattr(instance, "app", None)
    if app is None:
        return
    url = str(app.conf.broker_url or "")
    if url.startswith("azurequeue://"):
        app.steps["worker"].add(HandBackUnstarted)
