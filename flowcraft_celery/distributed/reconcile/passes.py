"""The reconciler: runs `running` but idle past the stall threshold get their lost work re-published.

The ledger knows what is pending (and with which payload); a pending message is re-published
only when it is really lost, never when evidence says it is still on its way:
- it waits for an external event (`awaiting`) or for a child run (subflow);
- it is delayed and not yet due (a retry waiting out its `retryDelay`, a sleep), or was sent
  (or came due) less than the stall threshold ago;
- its node is running: the execution lease of its token is alive;
- it is still queued: its queue's oldest visible message is not younger than it
  (`queue_evidence`), however deep the backlog;
- a live worker has taken it off the queue and not started it yet (prefetched; `in_flight`).
A run whose Redis state was lost is rebuilt first (`recovery`); a run with nothing pending
completes only on durable evidence. Each run is taken under a lock, so two beats are safe;
duplicates that slip through are harmless because node messages take effect once.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass

from celery import Celery

from flowcraft_celery.distributed.core.message import NodeMessage
from flowcraft_celery.distributed.core.runtime import Runtime
from flowcraft_celery.distributed.core.tracing import span
from flowcraft_celery.distributed.reconcile.in_flight import WorkerHands
from flowcraft_celery.distributed.reconcile.queue_evidence import QueueFronts
from flowcraft_celery.distributed.runs.ending import notify_parent
from flowcraft_celery.distributed.runs.graphs import run_graph
from flowcraft_celery.distributed.runs.publishing import publish
from flowcraft_celery.distributed.runs.recovery import complete_run, ensure_state
from flowcraft_celery.model.graph import Graph
from flowcraft_celery.stores.base import FINAL_STATES
from flowcraft_celery.stores.guard import is_outage

logger = logging.getLogger("flowcraft.reconcile")


@dataclass
class ReconcileReport:
    """What one reconcile pass did (and what it left alone, by reason)."""

    stalled: int = 0
    reconciled: int = 0
    republished: int = 0
    completed: int = 0
    failed: int = 0
    queued: int = 0
    running: int = 0
    delayed: int = 0

    def to_dict(self) -> dict[str, int]:
        """JSON form (the task's return value)."""
        return asdict(self)


def reconcile(app: Celery, rt: Runtime, stall_seconds: float | None = None) -> ReconcileReport:
    """One pass over stalled runs; safe to run concurrently (each run is taken under a lock)."""
    report = ReconcileReport()
    now = time.time()
    owner = uuid.uuid4().hex
    threshold = rt.settings.stall_seconds if stall_seconds is None else stall_seconds
    fronts = QueueFronts(app)
    hands = WorkerHands(app)
    for doc in list(rt.statuses.find_stalled(threshold, now)):
        report.stalled += 1
        run_id = doc["runId"]
        lock = f"reconcile:{run_id}"
        if not rt.coordination.acquire(lock, owner, ttl=60):
            continue
        try:
            with span("flowcraft.reconcile.run", {"flowcraft.run_id": run_id,
                                                  "flowcraft.blueprint": doc.get("blueprintId")}):
                _reconcile_run(app, rt, run_id, str(doc.get("blueprintId")), threshold, now, (fronts, hands),
                               report)
        except Exception as exc:
            outage = is_outage(exc)
            logger.log(logging.INFO if outage else logging.ERROR, "run %s: reconcile failed: %s", run_id, exc,
                       exc_info=not outage)
            report.failed += 1
        finally:
            rt.coordination.release(lock, owner)
    logger.info("reconcile: %s", report.to_dict())
    return report


def _reconcile_run(app: Celery, rt: Runtime, run_id: str, blueprint_id: str, threshold: float, now: float,
                   evidence: tuple[QueueFronts, WorkerHands], report: ReconcileReport) -> None:
    """Re-publish what one stalled run really lost."""
    blueprint = rt.blueprints.get(blueprint_id)
    if blueprint is None:
        logger.error("run %s: blueprint %r unknown to this reconciler", run_id, blueprint_id)
        report.failed += 1
        return
    if rt.ledger.generation(run_id) is None and ensure_state(app, rt, run_id) != "live":
        return  # final, unknown, or being rebuilt by a worker right now
    pending = {name: NodeMessage.from_wire(entry) for name, entry in rt.ledger.pending(run_id).items()}
    if not pending:
        report.completed += int(complete_run(app, rt, run_id))
        return
    awaiting = set(rt.ledger.awaiting(run_id))
    graph = run_graph(rt, blueprint, run_id, any(p.dynamic for p in pending.values()))
    for node_token, message in pending.items():
        if node_token in awaiting:
            continue
        if message.child_run:
            report.republished += int(_child_ended_unnoticed(app, rt, message.child_run))
            continue
        reason = _still_on_its_way(app, rt, graph, run_id, node_token, message, threshold, now, evidence)
        if reason is not None:
            setattr(report, reason, getattr(report, reason) + 1)
            continue
        sent = publish(app, graph, message)
        rt.ledger.refresh_pending(run_id, node_token, sent.to_wire())
        report.republished += 1
    rt.statuses.touch(run_id)
    report.reconciled += 1


def _still_on_its_way(app: Celery, rt: Runtime, graph: Graph, run_id: str, node_token: str, message: NodeMessage,
                      threshold: float, now: float, evidence: tuple[QueueFronts, WorkerHands]) -> str | None:
    """Why a pending message is not lost (`delayed`, `running`, `queued`), or None if it is."""
    sent = message.sent or 0.0
    due = message.due or message.wake_at or 0.0
    if now - max(sent, due) < threshold:
        return "delayed"
    if rt.coordination.holder(f"exec:{run_id}:{node_token}") is not None:
        return "running"
    node = graph.nodes.get(message.node_id)
    queue = (node.config.queue if node is not None else None) or str(app.conf.task_default_queue)
    fronts, hands = evidence
    if sent and fronts.still_queued(queue, sent):
        return "queued"
    if hands.hold(run_id, node_token):  # taken off the queue by a live worker, not started yet
        return "running"
    return None


def _child_ended_unnoticed(app: Celery, rt: Runtime, child_id: str) -> bool:
    """A subflow's child run ended but its parent still waits: tell the parent again."""
    child = rt.statuses.get(child_id)
    if child is None or child.get("status") not in FINAL_STATES:
        return False
    notify_parent(app, rt, child_id)
    return True
