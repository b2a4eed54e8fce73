"""The reconciler: runs `running` but idle past the stall threshold get their outstanding work re-published.

The ledger knows exactly what is pending (and with which payload), so reconciling is
re-publishing those messages under a per-run lock; duplicates are harmless because node
messages take effect once. Sleeping branches not yet due and awaiting nodes are left alone.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass

from celery import Celery

from flowcraft_celery.distributed.recovery import complete, ensure_state
from flowcraft_celery.distributed.runs import publish, run_graph
from flowcraft_celery.distributed.runtime import Runtime

logger = logging.getLogger("flowcraft.reconcile")


@dataclass
class ReconcileReport:
    """What one reconcile pass did."""

    stalled: int = 0
    reconciled: int = 0
    republished: int = 0
    completed: int = 0
    failed: int = 0

    def to_dict(self) -> dict[str, int]:
        """JSON form (the task's return value)."""
        return asdict(self)


def reconcile(app: Celery, rt: Runtime, stall_seconds: float | None = None) -> ReconcileReport:
    """One pass over stalled runs; safe to run concurrently (each run is taken under a lock)."""
    report = ReconcileReport()
    now = time.time()
    owner = uuid.uuid4().hex
    threshold = rt.stall_seconds if stall_seconds is None else stall_seconds
    for doc in list(rt.statuses.find_stalled(threshold, now)):
        report.stalled += 1
        run_id = doc["runId"]
        lock = f"reconcile:{run_id}"
        if not rt.coordination.acquire(lock, owner, ttl=60):
            continue
        try:
            blueprint = rt.blueprints.get(str(doc.get("blueprintId")))
            if blueprint is None:
                logger.error("run %s: blueprint %r unknown to this reconciler", run_id, doc.get("blueprintId"))
                report.failed += 1
                continue
            if rt.ledger.generation(run_id) is None and ensure_state(app, rt, run_id) != "live":
                continue  # final, unknown, or being rebuilt by a worker right now
            pending = rt.ledger.pending(run_id)
            if not pending:
                report.completed += int(complete(app, rt, run_id))
                continue
            awaiting = set(rt.ledger.awaiting(run_id))
            graph = run_graph(rt, blueprint, run_id, any(p.get("dyn") for p in pending.values()))
            for node_token, message in pending.items():
                wake_at = float(message.get("wakeAt") or 0)
                if node_token in awaiting or message.get("childRun"):
                    continue
                publish(app, graph, message, countdown=max(0.0, wake_at - now) or None)
                report.republished += 1
            rt.statuses.touch(run_id)
            report.reconciled += 1
        except Exception:
            logger.exception("run %s: reconcile failed", run_id)
            report.failed += 1
        finally:
            rt.coordination.release(lock, owner)
    logger.info("reconcile: %s", report.to_dict())
    return report
