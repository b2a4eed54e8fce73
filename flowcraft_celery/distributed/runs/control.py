"""Operator control of a live run: resume an awaiting execution, cancel a run and its child runs."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from flowcraft_celery.distributed.core.message import NodeMessage
from flowcraft_celery.distributed.core.runtime import Runtime
from flowcraft_celery.distributed.runs.awaiting import awaiting_choice
from flowcraft_celery.distributed.runs.ending import arm_parent, ended, final_result, finish
from flowcraft_celery.distributed.runs.errors import RunError
from flowcraft_celery.distributed.runs.graphs import blueprint_graph, run_graph
from flowcraft_celery.distributed.runs.publishing import publish
from flowcraft_celery.distributed.runs.recovery import ensure_state
from flowcraft_celery.engine.builtins import webhook_output
from flowcraft_celery.engine.semantics import check_resume_action
from flowcraft_celery.model.json_values import check_json
from flowcraft_celery.stores.base import FINAL_STATES, RunStatusDoc
from flowcraft_celery.stores.ledger import token

logger = logging.getLogger("flowcraft.runs")


def resume_run(app: Celery, rt: Runtime, run_id: str, action: str | None, output: Any,
               node_id: str | None = None) -> str:
    """Continue an awaiting run: the waiting node's result becomes `output` and `action`.
    `node_id` picks the waiting node (`node`, `node@2.5` or `node@2000005`, see `awaiting_choice`);
    returns the token (`node@iteration`) of the execution resumed."""
    doc = rt.statuses.get(run_id)
    if doc is None:
        raise RunError(f"no run {run_id!r}")
    if doc.get("status") != "awaiting":
        raise RunError(f"run {run_id!r} is not awaiting (status {doc.get('status')!r})")
    lost = rt.ledger.generation(run_id) is None  # Redis lost the run's state: rebuild it first
    if lost and ensure_state(app, rt, run_id) != "live":
        raise RunError(f"run {run_id!r} cannot be resumed right now (its state is being rebuilt); try again")
    awaiting = rt.ledger.awaiting(run_id)
    blueprint = rt.blueprints.get(str(doc.get("blueprintId")))
    if blueprint is None:
        raise RunError(f"run {run_id!r} cannot be resumed here: its blueprint {doc.get('blueprintId')!r} is not known")
    static = blueprint_graph(blueprint)  # a dynamic node is known to the run's graph only
    dynamic = node_id is not None and node_id not in static.nodes and node_id.rpartition("@")[0] not in static.nodes
    node_token = awaiting_choice(run_graph(rt, blueprint, run_id, True) if dynamic else static, run_id, awaiting,
                                 node_id)
    entry = rt.ledger.pending(run_id).get(node_token)
    if entry is None:
        raise RunError(f"run {run_id!r} has no pending message for {node_token!r}")
    pending = NodeMessage.from_wire(entry)
    graph = run_graph(rt, blueprint, run_id, pending.dynamic)
    if graph.nodes[pending.node_id].uses == "subflow":  # the child resumes its node and releases this run
        resume_run(app, rt, pending.child_run or "", action, output)
        return node_token
    try:
        check_resume_action(graph, pending.node_id, action, pending.iteration)
        check_json(output, "resume output")
    except ValueError as exc:
        raise RunError(f"resume of run {run_id!r} refused: {exc}") from exc
    remaining = rt.ledger.unawait_token(run_id, node_token)
    rt.statuses.update(run_id, {"status": "awaiting" if remaining else "running", "awaiting": remaining})
    if not remaining:
        _unawait_parents(rt, doc)
    if pending.webhook:  # a webhook node's output is its URL and the body it received
        output = webhook_output(pending.webhook, output)
    message = pending.but(resume={"action": action, "output": output})
    rt.arm(run_id)
    rt.ledger.update_pending(run_id, node_token, message.to_wire())
    publish(app, graph, message)
    return node_token


def _unawait_parents(rt: Runtime, doc: RunStatusDoc) -> None:
    """A child run resumed directly (its webhook, say) no longer holds its parents awaiting."""
    while doc.get("parentRunId"):
        parent_id = str(doc["parentRunId"])
        parent_token = token(str(doc.get("parentNodeId")), int(doc.get("parentIteration", 0) or 0))
        remaining = rt.ledger.unawait_token(parent_id, parent_token)
        rt.statuses.update(parent_id, {"status": "awaiting" if remaining else "running", "awaiting": remaining})
        parent = rt.statuses.get(parent_id)
        if remaining or parent is None:
            return
        doc = parent


def cancel_run(rt: Runtime, run_id: str) -> bool:
    """Stop a run and its child runs: each becomes `cancelled` (its result keeps the context it
    had) and workers start none of their nodes afterwards."""
    doc = rt.statuses.get(run_id)
    if doc is None:
        raise RunError(f"no run {run_id!r}")
    if doc.get("status") in FINAL_STATES:
        return False
    rt.ledger.halt(run_id, "cancelled")
    arm_parent(rt, doc)
    done = finish(rt, run_id, "cancelled", final_result(rt, run_id, "cancelled", []), [])
    if done is not None:
        ended(rt, run_id, "cancelled", done)
    for entry in rt.ledger.pending(run_id).values():  # its subflows' child runs
        child = NodeMessage.from_wire(entry).child_run
        if child and rt.statuses.get(child) is not None:
            cancel_run(rt, child)
    return done is not None
