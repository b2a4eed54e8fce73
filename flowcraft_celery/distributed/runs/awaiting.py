"""Awaiting executions: a run (and its parents) marked `awaiting`, and which awaiting execution a resume names."""

from __future__ import annotations

from celery import Celery

from flowcraft_celery.distributed.core.runtime import Runtime
from flowcraft_celery.distributed.runs.errors import RunError
from flowcraft_celery.distributed.runs.graphs import blueprint_graph, run_graph
from flowcraft_celery.model.graph import Graph
from flowcraft_celery.stores.base import RunStatusDoc
from flowcraft_celery.stores.ledger import token


def mark_awaiting(app: Celery, rt: Runtime, run_id: str, node_token: str) -> None:
    """Put the run in `awaiting` for `node_token` (and its parent too, for a subflow)."""
    awaiting = rt.ledger.await_token(run_id, node_token)
    rt.statuses.update(run_id, {"status": "awaiting", "awaiting": awaiting})
    doc = rt.statuses.get(run_id)
    if doc and doc.get("parentRunId"):
        parent_token = token(str(doc.get("parentNodeId")), int(doc.get("parentIteration", 0) or 0))
        mark_awaiting(app, rt, str(doc["parentRunId"]), parent_token)


def awaiting_choice(graph: Graph, run_id: str, awaiting: list[str], node_ref: str | None) -> str:
    """The awaiting execution (`node@iteration` token) a resume continues: the first, or the one
    `node_ref` names: `node`, or `node@2.5` (passes, outer loop first, as commands show them) or
    `node@2000005` (the iteration number). RunError naming a bad value or a node not awaiting."""
    if node_ref is None:
        if not awaiting:
            raise RunError(f"run {run_id!r} has no awaiting node")
        return awaiting[0]
    try:
        node_id, iteration = graph.execution(node_ref)
    except ValueError as exc:
        raise RunError(f"cannot resume {node_ref!r} of run {run_id!r}: {exc}") from None
    for node_token in awaiting:
        name, _, number = node_token.rpartition("@")
        if name == node_id and (iteration is None or number == str(iteration)):
            return node_token
    shown = [graph.execution_label(*_split_token(t)) for t in sorted(awaiting)]
    raise RunError(f"node {node_ref!r} of run {run_id!r} is not awaiting; awaiting: {shown}")


def _split_token(node_token: str) -> tuple[str, int]:
    name, _, number = node_token.rpartition("@")
    return name, int(number) if number.isdigit() else 0


def execution_label(rt: Runtime, doc: RunStatusDoc, node_token: str) -> str:
    """`node@2.5`: a run's node execution token with its iteration as passes (outer loop first),
    as commands show it; the token itself when the run's blueprint is not known here."""
    try:
        blueprint = rt.blueprints.get(str(doc.get("blueprintId")))
    except ValueError:  # its file cannot be read here: the token as stored
        return node_token
    if blueprint is None:
        return node_token
    node_id, iteration = _split_token(node_token)
    graph = blueprint_graph(blueprint)
    if node_id not in graph.nodes:  # a dynamic node: the run's graph knows it
        graph = run_graph(rt, blueprint, str(doc.get("runId")), True)
    return graph.execution_label(node_id, iteration)
