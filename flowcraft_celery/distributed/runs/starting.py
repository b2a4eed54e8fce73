"""Starting a run, all or nothing: context, ledger, status and start messages, taken back when one write fails."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from celery import Celery

from flowcraft_celery.distributed.core.message import node_message
from flowcraft_celery.distributed.core.runtime import Runtime
from flowcraft_celery.distributed.core.tracing import span
from flowcraft_celery.distributed.runs.errors import RunError, StartError
from flowcraft_celery.distributed.runs.publishing import publish_within
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.graph import Graph, start_nodes
from flowcraft_celery.model.ids import check_id
from flowcraft_celery.model.json_values import check_json
from flowcraft_celery.model.validation import BlueprintValidationError, validate_or_raise
from flowcraft_celery.stores.base import RunStatusDoc
from flowcraft_celery.stores.ledger import token

logger = logging.getLogger("flowcraft.runs")


def start_run(app: Celery, rt: Runtime, blueprint_id: str, context: Mapping[str, Any] | None = None,
              run_id: str | None = None, start_input: Any = None,
              parent: Mapping[str, Any] | None = None) -> str:
    """Validate, then write the context, ledger and status and publish the start messages, all
    or nothing (see the module docstring); return the run id."""
    blueprint = rt.blueprints.get(blueprint_id)
    if blueprint is None:
        known = ", ".join(sorted(rt.blueprints)) or "none"
        raise RunError(f"unknown blueprint {blueprint_id!r} (known: {known})")
    validate_start(rt, blueprint)
    if run_id is not None:
        check_id("run", run_id)
        existing = _existing_run(rt, run_id)
        if existing is not None:
            if existing.get("blueprintId") != blueprint.id:
                raise RunError(f"run id {run_id!r} is already a run of blueprint {existing.get('blueprintId')!r}, "
                               f"not {blueprint.id!r}; choose another run id")
            return run_id
    check_json(dict(context or {}), "initial context")
    check_json(start_input, "start input")
    run_id = run_id or uuid.uuid4().hex
    with span("flowcraft.start", {"flowcraft.run_id": run_id, "flowcraft.blueprint": blueprint.id,
                                  "flowcraft.parent_run_id": (parent or {}).get("parentRunId")}):
        _begin(app, rt, blueprint, run_id, context, start_input, parent)
    return run_id


def validate_start(rt: Runtime, blueprint: Blueprint) -> None:
    """Validate against the node implementations the deployment published, read again before an
    implementation the last read did not list is refused (its worker may have just started)."""
    try:
        validate_or_raise(blueprint, rt.implementations(), rt.blueprints)
    except BlueprintValidationError as exc:
        if not any(issue.code == "MISSING_NODE_IMPLEMENTATION" for issue in exc.issues):
            raise
        validate_or_raise(blueprint, rt.implementations(fresh=True), rt.blueprints)


def _begin(app: Celery, rt: Runtime, blueprint: Blueprint, run_id: str, context: Mapping[str, Any] | None,
           start_input: Any, parent: Mapping[str, Any] | None) -> None:
    """Write the new run's context, ledger and status, then publish its start messages (all or nothing)."""
    now = time.time()
    doc = RunStatusDoc(runId=run_id, blueprintId=blueprint.id, blueprintVersion=blueprint.run_version,
                       status="running", createdAt=now, lastUpdated=now, errors=[], awaiting=[],
                       generation=1, sleeping={})
    if start_input is not None:
        doc["startInput"] = start_input
    if parent:
        doc.update(parent)  # type: ignore[typeddict-item]
    graph = Graph(blueprint)
    messages = {token(n, 0): node_message(run_id, blueprint, n, 0, start_input).sent_at(now)
                for n in start_nodes(graph)}
    written: list[str] = []
    try:
        written.append("context")
        rt.contexts.create_run(run_id, dict(context or {}))
        written.append("ledger")
        rt.ledger.begin(run_id, 1, {name: message.to_wire() for name, message in messages.items()},
                        rt.settings.touch_interval, str((parent or {}).get("parentRunId") or ""))
        written.append("status")
        rt.statuses.create(doc)
        rt.arm(run_id)
        sent = publish_within(app, graph, list(messages.values()), rt.settings.start_timeout)
    except Exception as exc:
        _take_back(rt, run_id, written)
        raise StartError(f"run {run_id} not started: {exc}".splitlines()[0]) from exc
    with contextlib.suppress(Exception):  # best effort: the earlier stamp only makes reconcile re-send sooner
        # their `sent` is now after the queue took them; an entry a start node already moved on from stays
        rt.ledger.settle(run_id, "", {message.token: (messages[message.token].to_wire(), message.to_wire())
                                      for message in sent})


def _existing_run(rt: Runtime, run_id: str) -> RunStatusDoc | None:
    """The status document of a run id a caller reuses (StartError when it cannot be read)."""
    try:
        return rt.statuses.get(run_id)
    except Exception as exc:
        raise StartError(f"run {run_id} not started: {exc}".splitlines()[0]) from exc


def _take_back(rt: Runtime, run_id: str, written: list[str]) -> None:
    """Undo a start that failed, so nothing of the run executes: the status document goes (or,
    if it cannot be deleted, becomes `failed`), the ledger halts, the context goes. Best effort:
    the caller reports the first failure; what could not be undone is logged at INFO."""
    if "status" in written:
        try:
            rt.statuses.delete(run_id)
        except Exception as exc:
            logger.info("run %s: could not delete the status of a failed start (%s); marking it failed", run_id, exc)
            try:
                error = {"type": "StartError", "message": "the run could not be started"}
                rt.statuses.finish(run_id, "failed", {"status": "failed", "context": {}, "errors": [error]}, [error])
            except Exception as again:
                logger.info("run %s: could not mark a failed start as failed: %s", run_id, again)
    if "ledger" in written:
        try:
            rt.ledger.halt(run_id, "not started")
        except Exception as exc:
            logger.info("run %s: could not halt the ledger of a failed start: %s", run_id, exc)
    try:
        rt.contexts.delete_run(run_id)
    except Exception as exc:
        logger.info("run %s: could not delete the context of a failed start: %s", run_id, exc)
