"""A run's end: its final result recorded once, its Redis state halted, its records set to expire,
its duration counted, its parent told."""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Literal

from celery import Celery

from flowcraft_celery.distributed.core.message import node_message
from flowcraft_celery.distributed.core.runtime import Runtime
from flowcraft_celery.distributed.runs.graphs import run_graph
from flowcraft_celery.distributed.runs.publishing import publish
from flowcraft_celery.distributed.runs.retention import expire_finished_run, retention_ttl
from flowcraft_celery.stores.base import RunState, RunStatusDoc
from flowcraft_celery.stores.guard import is_outage
from flowcraft_celery.stores.histograms import RUN_SECONDS, Observation

logger = logging.getLogger("flowcraft.runs")


#: Largest final context (JSON bytes) copied into the status document; a bigger one stays in
#: the context store only (`Client.result` reads it there), so the status item stays far below
#: Cosmos's 2 MiB item limit.
RESULT_CONTEXT_LIMIT = 512 * 1024


def final_result(rt: Runtime, run_id: str, status: str, errors: list[dict[str, Any]],
                 context: dict[str, Any] | None = None) -> dict[str, Any]:
    """`{status, context, errors}` of a finished run; `contextInStore` instead of a too large context."""
    context = rt.contexts.snapshot(run_id) if context is None else context
    if len(json.dumps(context, default=str)) > RESULT_CONTEXT_LIMIT:
        return {"status": status, "context": None, "contextInStore": True, "errors": errors}
    return {"status": status, "context": context, "errors": errors}


def finish(rt: Runtime, run_id: str, status: RunState, result: dict[str, Any],
           errors: list[dict[str, Any]]) -> RunStatusDoc | None:
    """Record the run's final state once, its status item expiring after the retention (in the
    same write); the document as finished for the call that did it (which then calls `ended`)."""
    return rt.statuses.finish(run_id, status, result, errors, expire_after=retention_ttl(rt))


def record_completed(app: Celery, rt: Runtime, run_id: str, context: dict[str, Any] | None = None) -> bool:
    """Finish a run as `completed` with its final context (callers check the durable evidence
    first: only `recovery.complete_run` calls this); True if this call did it. The finished
    document (the write's answer) names the blueprint, parent and start time that follow need."""
    done = finish(rt, run_id, "completed", final_result(rt, run_id, "completed", [], context), [])
    if done is not None:
        ended(rt, run_id, "completed", done)
        notify_parent(app, rt, run_id, done, "completed")
    return done is not None


def fail_run(app: Celery, rt: Runtime, run_id: str, errors: list[dict[str, Any]],
             status: Literal["failed", "stalled"] = "failed") -> bool:
    """Halt a run and record it `failed` (or `stalled`: a join it reached can never run) with its errors."""
    rt.ledger.halt(run_id, status)
    arm_parent(rt, rt.statuses.get(run_id))
    done = finish(rt, run_id, status, final_result(rt, run_id, status, errors), errors)
    if done is not None:
        ended(rt, run_id, status, done)
        notify_parent(app, rt, run_id, done, status)
    return done is not None


def retire(rt: Runtime, run_id: str, status: str, doc: RunStatusDoc | None = None,
           status_expiring: bool = False) -> None:
    """A final run: halted in Redis (late messages are dropped), out of reconcile's due index, its
    records expiring after the retention (`doc`: its status document read before, if the caller
    has it; `status_expiring`: `finish` gave the status item its TTL)."""
    rt.ledger.halt(run_id, status)
    rt.due.forget([run_id])
    expire_finished_run(rt, run_id, doc, status_expiring)


def ended(rt: Runtime, run_id: str, status: str, doc: RunStatusDoc | None = None) -> None:
    """This call made the run final: retire it and record its duration (best effort: the final
    state is recorded already, only the metric would be missing). `doc`: the status document as
    the call finished it (else it is read now)."""
    try:
        if doc is None:
            doc = rt.statuses.get(run_id)
        if doc is not None:
            took = float(doc.get("lastUpdated") or time.time()) - float(doc.get("createdAt") or time.time())
            rt.timeline.observe(Observation(RUN_SECONDS, {"blueprint": str(doc.get("blueprintId")),
                                                          "status": status}, took))
    except Exception as exc:
        level = logging.INFO if is_outage(exc) else logging.WARNING  # an outage is told once, by the outage log
        logger.log(level, "run %s ended %s but its duration was not recorded: %s", run_id, status, exc)
    retire(rt, run_id, status, doc, status_expiring=True)


def arm_parent(rt: Runtime, doc: RunStatusDoc | None) -> None:
    """Before a child run ends: its parent, parked while it waits, is due again (so reconcile tells
    it of the end if the news is lost)."""
    if doc and doc.get("parentRunId"):
        rt.arm(str(doc["parentRunId"]))


def notify_parent(app: Celery, rt: Runtime, run_id: str, doc: RunStatusDoc | None = None,
                  status: str | None = None) -> None:
    """Tell a subflow's parent node that the child run ended (or paused); `doc` and `status`:
    the child's status document read before and the status it ended with, if the caller knows
    them (else the document is read now)."""
    doc = doc if doc is not None and status is not None else rt.statuses.get(run_id)
    if not doc or not doc.get("parentRunId"):
        return
    parent_run = str(doc["parentRunId"])
    parent_doc = rt.statuses.get(parent_run)
    blueprint = rt.blueprints.get(str(parent_doc.get("blueprintId"))) if parent_doc else None
    if parent_doc is None or blueprint is None:
        return
    node_id = str(doc.get("parentNodeId"))
    iteration = int(doc.get("parentIteration", 0) or 0)
    child = {"runId": run_id, "status": status or doc.get("status")}
    message = node_message(parent_run, blueprint, node_id, iteration, None, dynamic=True, child=child)
    rt.arm(parent_run)
    publish(app, run_graph(rt, blueprint, parent_run, True), message)
