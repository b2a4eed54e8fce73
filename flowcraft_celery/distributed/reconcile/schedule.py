"""How beat's reconcile passes show: quiet ones nowhere but a counter, active ones in Flower too.

Beat sends `flowcraft.reconcile` every `flowcraft_reconcile_interval` seconds (30), and nearly
every pass finds nothing. So the task keeps no Celery result and sends no task events, and beat
sends no `task-sent` events, which keeps quiet passes out of Flower's task list and out of the
results container. A pass that found stalled runs announces itself afterwards with the task
events a worker would have sent (received, started, succeeded with the pass's counts), so it is
listed in Flower as `flowcraft.reconcile` with its result. Every pass is counted in Redis
(`reconcile|quiet`, `reconcile|active`, `republished|`): the metrics endpoint exports them as
`flowcraft_reconcile_passes_total{result}` and `flowcraft_reconcile_republished_total`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from celery.signals import beat_init
from celery.utils.saferepr import saferepr

from flowcraft_celery.distributed.core.runtime import Runtime
from flowcraft_celery.stores.guard import log_level

logger = logging.getLogger("flowcraft.reconcile")


def is_active(report: Mapping[str, int]) -> bool:
    """Whether a pass found anything to do (a stalled run), as opposed to a quiet pass."""
    return int(report.get("stalled", 0)) > 0


def record_pass(task: Any, rt: Runtime, report: Mapping[str, int], runtime: float) -> None:
    """Count the pass; announce an active one to Flower with the task's own events."""
    active = is_active(report)
    try:
        rt.timeline.count(f"reconcile|{'active' if active else 'quiet'}")
        if report.get("republished"):
            rt.timeline.count("republished|", int(report["republished"]))
    except Exception as exc:  # the pass is done; only its counter is missing
        logger.log(log_level(exc, logging.WARNING, logging.DEBUG), "could not count the reconcile pass: %s", exc)
    if active and task.app.conf.get("worker_send_task_events"):
        request = task.request
        task.send_event("task-received", name=task.name, args=saferepr(request.args or ()),
                        kwargs=saferepr(request.kwargs or {}), root_id=request.root_id,
                        parent_id=request.parent_id, retries=request.retries, eta=None, expires=None)
        task.send_event("task-started")
        task.send_event("task-succeeded", result=saferepr(dict(report)), runtime=runtime)


def _no_sent_events(sender: Any = None, **_: Any) -> None:
    """Beat publishes without `task-sent` events (a quiet pass would show as a task never run)."""
    if sender is not None:
        sender.app.conf.task_send_sent_event = False


def install_quiet_beat() -> None:
    """Make beat publish without `task-sent` events (idempotent)."""
    beat_init.connect(_no_sent_events, weak=False, dispatch_uid="flowcraft-quiet-beat")
