"""Cosmos holds a run's truth; when Redis lost the run's state, rebuild it from there.

Redis (joins, claims, the pending ledger) is coordination that can be lost: a restart without
persistence, a failover, a flush, an eviction. Two checks keep that from producing a false status:

- Every node message first reads the run's marker in Redis (`RunLedger.check`). No marker
  means Redis holds nothing of the run: `ensure_state` reads the status document. No document:
  the run does not exist (the message is dead-lettered by the caller). Final: the message is
  dropped. Live: the ledger, joins and claims are rebuilt from the recorded outputs, the graph
  (with dynamic nodes), the awaiting and sleeping nodes (`engine.frontier`), under a lock, with
  the run's generation bumped in Redis and Cosmos; then the message goes on as usual. Messages
  still queued carry the run on; the reconciler re-sends only what is really lost.
- A run completes only on durable evidence: when the ledger says nothing is pending,
  `complete_run` (the one public way to complete a run) replays the recorded outputs and
  finishes the run only if nothing is left to run; otherwise Redis had lost part of the run's
  state, which is rebuilt and the missing node messages re-sent.

A run that cannot be rebuilt (its recorded outputs no longer fit its blueprint) fails with a
reason that names the loss.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from celery import Celery

from flowcraft_celery.distributed.core.message import NodeMessage, node_message
from flowcraft_celery.distributed.core.runtime import Runtime
from flowcraft_celery.distributed.core.tracing import span
from flowcraft_celery.distributed.runs.ending import arm_parent, fail_run, record_completed, retire
from flowcraft_celery.distributed.runs.errors import RunError
from flowcraft_celery.distributed.runs.publishing import child_run_id, publish
from flowcraft_celery.engine import semantics
from flowcraft_celery.engine.frontier import Frontier, frontier
from flowcraft_celery.model.graph import Graph
from flowcraft_celery.stores.base import FINAL_STATES, MISSING, RecordedOutput, RunStatusDoc
from flowcraft_celery.stores.faults import classify
from flowcraft_celery.stores.ledger import RebuiltState, token

logger = logging.getLogger("flowcraft.recovery")

Presence = Literal["live", "final", "unknown", "busy"]
#: Seconds a rebuild may hold its run's lock.
REBUILD_LOCK_SECONDS = 120.0


@dataclass
class Evidence:
    """What Cosmos records of a run, replayed: its frontier, context and outputs."""

    frontier: Frontier
    context: dict[str, Any]
    outputs: list[RecordedOutput]


def durable_evidence(rt: Runtime, run_id: str, doc: RunStatusDoc) -> Evidence:
    """Replay the run's recorded outputs (RunError when its blueprint is unknown here)."""
    blueprint = rt.blueprints.get(str(doc.get("blueprintId")))
    if blueprint is None:
        raise RunError(f"run {run_id}: blueprint {doc.get('blueprintId')!r} is not known to this process")
    context, outputs = rt.contexts.snapshot_and_outputs(run_id)
    recorded = {(o.node_id, o.iteration): o for o in outputs}

    def lookup(key: str) -> Any:
        return context.get(key, MISSING)

    replay = frontier(Graph(blueprint), run_id, recorded, doc.get("startInput"), lookup)
    return Evidence(replay, context, outputs)


def ensure_state(app: Celery, rt: Runtime, run_id: str) -> Presence:
    """Make Redis hold the run's state again (see the module docstring); say what the run is."""
    doc = rt.statuses.get(run_id)
    if doc is None:
        return "unknown"
    status = str(doc.get("status"))
    if status in FINAL_STATES:
        retire(rt, run_id, status)
        return "final"
    owner = uuid.uuid4().hex
    lock = f"rebuild:{run_id}"
    if not rt.coordination.acquire(lock, owner, REBUILD_LOCK_SECONDS):
        return "busy"
    try:
        if rt.ledger.generation(run_id) is not None:
            return "live"
        try:
            rebuild(app, rt, run_id, doc, "Redis held no state for the run")
        except Exception as exc:
            if classify(exc) == "infrastructure" or isinstance(exc, RunError):
                raise
            _fail_lost(app, rt, run_id, exc)
            return "final"
        return "live"
    finally:
        rt.coordination.release(lock, owner)


def complete_run(app: Celery, rt: Runtime, run_id: str, known: RunStatusDoc | None = None) -> bool:
    """Finish a run whose ledger has nothing pending, if Cosmos agrees nothing is left to run;
    otherwise rebuild its state and re-send what is missing. True if this call completed it. A run
    whose replay reaches a join that can never fire ends `stalled` (engine.dispatch.StalledJoin).

    `known`: the blueprint of a top-level run that the caller's ledger holds running (a node that
    just settled its last pending work); the status document is then read only when the run does
    not complete (the final write is guarded: a run that became final meanwhile stays so)."""
    doc = known if known is not None else rt.statuses.get(run_id)
    if doc is None or doc.get("status") in FINAL_STATES:
        return False
    evidence = durable_evidence(rt, run_id, doc)
    if evidence.frontier.complete:
        arm_parent(rt, doc)
        return record_completed(app, rt, run_id, evidence.context)
    if known is not None:
        doc = rt.statuses.get(run_id)
        if doc is None or doc.get("status") in FINAL_STATES:
            return False
    if evidence.frontier.stuck:  # never `completed` with a join reached that did not run
        errors = [join.to_error(evidence.frontier.graph) for join in evidence.frontier.stalled]
        fail_run(app, rt, run_id, errors, status="stalled")
        return False
    missing = sorted(evidence.frontier.pending)
    logger.warning("run %s: Redis says nothing is pending but Cosmos records %s still to run; Redis lost part "
                   "of the run's state: rebuilding it", run_id, ", ".join(missing[:10]))
    owner = uuid.uuid4().hex
    lock = f"rebuild:{run_id}"
    if rt.coordination.acquire(lock, owner, REBUILD_LOCK_SECONDS):
        try:
            rebuild(app, rt, run_id, doc, "the ledger had lost pending work", republish=True, evidence=evidence)
        finally:
            rt.coordination.release(lock, owner)
    return False


def rebuild(app: Celery, rt: Runtime, run_id: str, doc: RunStatusDoc, reason: str, republish: bool = False,
            evidence: Evidence | None = None) -> Frontier:
    """Write the run's ledger, joins and claims as Cosmos implies, bump its generation, and
    (with `republish`) send the messages of the node executions still to run."""
    with span("flowcraft.recover", {"flowcraft.run_id": run_id, "flowcraft.blueprint": doc.get("blueprintId"),
                                    "flowcraft.reason": reason}):
        return _rebuild(app, rt, run_id, doc, reason, republish, evidence or durable_evidence(rt, run_id, doc))


def _rebuild(app: Celery, rt: Runtime, run_id: str, doc: RunStatusDoc, reason: str, republish: bool,
             evidence: Evidence) -> Frontier:
    """`rebuild` inside its span."""
    replay = evidence.frontier
    now = time.time()
    pending = _pending_messages(rt, run_id, doc, evidence, now)
    awaiting = [t for t in doc.get("awaiting") or [] if t in pending]
    for arrival in replay.arrivals:
        rt.coordination.arrive(arrival.scope, arrival.predecessor, arrival.value, arrival.skipped)
    for scope, claimant in replay.claims.items():
        rt.coordination.claim(scope, claimant)
    generation = int(doc.get("generation") or 0) + 1
    rt.ledger.rebuild(run_id, RebuiltState(
        generation=generation, finished=list(replay.finished),
        recorded=[token(o.node_id, o.iteration) for o in evidence.outputs],
        pending={name: message.to_wire() for name, message in pending.items()}, awaiting=awaiting,
        dynamic=replay.additions, parent=str(doc.get("parentRunId") or "")))
    rt.statuses.update(run_id, {"generation": generation, "rebuiltAt": now})
    logger.warning("run %s: %s; rebuilt from Cosmos as generation %s (%s finished, %s pending, %s awaiting)",
                   run_id, reason, generation, len(replay.finished), len(pending), len(awaiting))
    if republish:
        for name, message in pending.items():
            if name in awaiting or message.child_run:
                continue
            publish(app, replay.graph, message, countdown=max(0.0, (message.due or 0) - now) or None)
    return replay


def _pending_messages(rt: Runtime, run_id: str, doc: RunStatusDoc, evidence: Evidence,
                      now: float) -> dict[str, NodeMessage]:
    """The node messages of the executions still to run (sleeping ones wake at their recorded
    time, subflows know their child run)."""
    replay = evidence.frontier
    blueprint = replay.graph.blueprint
    sleeping = doc.get("sleeping") or {}
    dynamic = bool(replay.graph.additions)
    context = evidence.context

    def lookup(key: str) -> Any:
        return context.get(key, MISSING)

    pending: dict[str, NodeMessage] = {}
    for name, start in replay.pending.items():
        message = node_message(run_id, blueprint, start.node_id, start.iteration, start.value, dynamic)
        node = replay.graph.nodes[start.node_id]
        wake_at = sleeping.get(name)
        if wake_at is not None:
            node_input = semantics.resolve_input(replay.graph, node, start.value, lookup, start.iteration)
            message = message.but(wake=True, wake_at=float(wake_at), value=node_input)
        if node.uses == "subflow":  # the child of its latest attempt (each attempt starts one)
            for attempt in range(node.config.attempts, 0, -1):
                child = child_run_id(run_id, start.node_id, start.iteration, attempt)
                if rt.statuses.get(child) is not None:
                    message = message.but(child_run=child, attempt=attempt)
                    break
        pending[name] = message.sent_at(now, float(wake_at) if wake_at is not None else None)
    return pending


def _fail_lost(app: Celery, rt: Runtime, run_id: str, exc: Exception) -> None:
    """The run cannot be rebuilt: fail it, naming the loss."""
    message = f"Redis lost the run's state and it cannot be rebuilt from Cosmos: {type(exc).__name__}: {exc}"
    logger.error("run %s: %s", run_id, message)
    fail_run(app, rt, run_id, [{"type": "RedisStateLost", "message": message}])
