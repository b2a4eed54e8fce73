"""The reconciler: runs whose time has come get their lost work re-published.

Which runs a pass looks at comes from the due index (`stores/due.py`): a run is due a stall
threshold after its latest sign of life (its start, a node touching it, a resume, its child run's
end), so a pass costs what is due, not what is alive. A pass takes at most its budget
(`flowcraft_reconcile_budget` runs) in due order, and beat's passes start no run after half the
beat interval (at least `MIN_PASS_SECONDS`); the rest go first in the next pass. After looking at
a run it reschedules it, or parks it when the run waits only for events (an approval, a webhook,
a child run): a parked run costs nothing until an event re-arms it. When Redis lost the index, each pass
first arms one page of the deployment's live runs from Cosmos until the sweep is through.

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
from flowcraft_celery.distributed.core.shards import node_queue
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

#: Seconds a taken run is left to the pass that took it (as long as its lock lasts).
LEASE_SECONDS = 60.0
#: Seconds a pass may always spend on runs, however short the beat interval (asking the workers
#: what they hold alone may take `in_flight.REPLY_TIMEOUT`).
MIN_PASS_SECONDS = 10.0


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
    parked: int = 0
    swept: int = 0

    def to_dict(self) -> dict[str, int]:
        """JSON form (the task's return value)."""
        return asdict(self)


def pass_seconds(app: Celery) -> float:
    """How long beat's pass may go on taking runs: half the beat interval, at least MIN_PASS_SECONDS."""
    return max(float(app.conf.get("flowcraft_reconcile_interval") or 30.0) / 2, MIN_PASS_SECONDS)


def reconcile(app: Celery, rt: Runtime, stall_seconds: float | None = None, budget: int | None = None,
              seconds: float | None = None) -> ReconcileReport:
    """One pass over the runs due (idle past `stall_seconds`, the deployment's threshold by
    default), at most `budget` of them, taking none after `seconds` (beat's passes: `pass_seconds`);
    safe to run concurrently (taken runs are leased)."""
    report = ReconcileReport()
    now = time.time()
    threshold = rt.settings.stall_seconds if stall_seconds is None else stall_seconds
    budget = budget or rt.settings.reconcile_budget
    ends = float("inf") if seconds is None else time.monotonic() + seconds
    report.swept = _sweep(rt, now, budget)
    # due times are `base + rt.settings.stall_seconds`: a shorter threshold looks that much further ahead
    taken = rt.due.take(now + max(0.0, rt.settings.stall_seconds - threshold), budget, LEASE_SECONDS)
    owner = uuid.uuid4().hex
    evidence = (QueueFronts(app), WorkerHands(app))
    for position, run_id in enumerate(taken.runs):
        if time.monotonic() > ends:  # the rest go first in the next pass
            for left in taken.runs[position:]:
                rt.due.reschedule(left, taken.lease, now)
            break
        report.stalled += 1
        lock = f"reconcile:{run_id}"
        if not rt.coordination.acquire(lock, owner, ttl=LEASE_SECONDS):
            continue  # another pass has it; it stays leased
        base: float | None = now
        try:
            with span("flowcraft.reconcile.run", {"flowcraft.run_id": run_id}):
                base = _reconcile_run(app, rt, run_id, threshold, now, evidence, report)
        except Exception as exc:
            outage = is_outage(exc)
            logger.log(logging.INFO if outage else logging.ERROR, "run %s: reconcile failed: %s", run_id, exc,
                       exc_info=not outage)
            report.failed += 1
        finally:
            rt.coordination.release(lock, owner)
        report.parked += int(base is None)
        rt.due.reschedule(run_id, taken.lease, None if base is None else base + rt.settings.stall_seconds)
    logger.info("reconcile: %s", report.to_dict())
    return report


def _sweep(rt: Runtime, now: float, budget: int) -> int:
    """While Redis has lost the due index: arm one page of the deployment's live runs from Cosmos."""
    position = rt.due.sweep_position(now)
    if position is None:
        return 0
    docs, following = rt.statuses.live_page(budget, position)
    rt.due.arm_all({str(d["runId"]): max(float(d.get("lastUpdated") or now), float(d.get("wakeAt") or 0))
                    + rt.settings.stall_seconds for d in docs})
    rt.due.sweep_moved(following)
    if docs:
        logger.warning("reconcile: the due index was missing; armed %s live runs from Cosmos%s", len(docs),
                       "" if following is None else " (more next pass)")
    return len(docs)


def _reconcile_run(app: Celery, rt: Runtime, run_id: str, threshold: float, now: float,
                   evidence: tuple[QueueFronts, WorkerHands], report: ReconcileReport) -> float | None:
    """Re-publish what one run really lost; return when to look again (as the time it was last
    seen alive), or None when it ended or waits only for events."""
    doc = rt.statuses.get(run_id)
    if doc is None or doc.get("status") in FINAL_STATES:
        return None
    blueprint = rt.blueprints.get(str(doc.get("blueprintId")))
    if blueprint is None:
        logger.error("run %s: blueprint %r unknown to this reconciler", run_id, doc.get("blueprintId"))
        report.failed += 1
        return now
    if rt.ledger.generation(run_id) is None:
        presence = ensure_state(app, rt, run_id)
        if presence != "live":  # final, unknown, or being rebuilt by a worker right now
            return now if presence == "busy" else None
    pending = {name: NodeMessage.from_wire(entry) for name, entry in rt.ledger.pending(run_id).items()}
    if not pending:
        report.completed += int(complete_run(app, rt, run_id))
        return now
    awaiting = set(rt.ledger.awaiting(run_id))
    graph = run_graph(rt, blueprint, run_id, any(p.dynamic for p in pending.values()))
    looks: list[float] = []
    for node_token, message in pending.items():
        if node_token in awaiting:
            continue
        if message.child_run:
            if _child_ended_unnoticed(app, rt, message.child_run):
                report.republished += 1
                looks.append(now)
            continue
        reason = _still_on_its_way(app, rt, graph, run_id, node_token, message, threshold, now, evidence)
        if reason == "delayed":
            looks.append(max(message.sent or 0.0, message.due or message.wake_at or 0.0))
        else:
            looks.append(now)
        if reason is not None:
            setattr(report, reason, getattr(report, reason) + 1)
            continue
        sent = publish(app, graph, message)
        rt.ledger.refresh_pending(run_id, node_token, sent.to_wire())
        report.republished += 1
    report.reconciled += 1
    return min(looks) if looks else None


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
    queue = node_queue(app.conf, node.config.queue if node is not None else None, run_id)
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
