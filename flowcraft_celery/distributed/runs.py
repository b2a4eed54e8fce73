"""A distributed run's lifecycle: start, publish node messages, finish, fail, cancel, resume.

Shared by the client (start, resume, cancel), the node tasks (publish, finish, fail) and the
reconciler (re-publish). A node message's payload is a small JSON dict:
`{run, bp, ver, node, it, value, attempt, dyn, sent}` plus `wake`/`resume`/`child`/`done` for
built-ins and retried writes; `sent` (and `due` for a delayed message) say when it was put on
its queue, which the reconciler uses as evidence that it may still be there.

`start_run` is all or nothing: the context, the ledger (with the run's marker, generation 1),
the status document and the start messages are written in that order, every service call has
a timeout, and when one fails what was written is taken back (the status document deleted,
the ledger halted) so the run never executes; the error names the endpoint. A caller may pass
its own run id: starting the same id again returns the run already started.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from celery import Celery

from flowcraft_celery.distributed.retention import expire_finished_run
from flowcraft_celery.distributed.runtime import Runtime
from flowcraft_celery.engine.builtins import webhook_output
from flowcraft_celery.engine.semantics import check_resume_action
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.graph import DynamicAddition, Graph, start_nodes
from flowcraft_celery.model.ids import MAX_ID_LENGTH, check_id
from flowcraft_celery.model.json_values import check_json
from flowcraft_celery.model.validation import validate_or_raise
from flowcraft_celery.stores.base import FINAL_STATES, RunStatusDoc
from flowcraft_celery.stores.faults import InfrastructureError
from flowcraft_celery.stores.ledger import token
from transports.azurequeue.bundles import bundled

logger = logging.getLogger("flowcraft.runs")

#: Seconds `start` waits for the broker to take the start messages (`flowcraft_start_timeout`).
START_TIMEOUT = 20.0

Payload = dict[str, Any]


class RunError(RuntimeError):
    """A run operation cannot be done (unknown run or blueprint, wrong state); says why."""


class StartError(RunError):
    """A run could not be started: nothing of it runs. The message names the failing endpoint."""


def node_task_name(uses: str) -> str:
    """The Celery task name of a node implementation."""
    return f"flowcraft.node.{uses}"


def payload(run_id: str, blueprint: Blueprint, node_id: str, iteration: int, value: Any,
            dynamic: bool = False, **extra: Any) -> Payload:
    """A node message's payload."""
    out: Payload = {"run": run_id, "bp": blueprint.id, "ver": blueprint.run_version, "node": node_id,
                    "it": iteration, "value": value, "attempt": 1, "dyn": dynamic}
    out.update(extra)
    return out


def publish(app: Celery, graph: Graph, message: Payload, countdown: float | None = None) -> None:
    """Send one node message to its implementation's task (and its node's queue, if set)."""
    publish_together(app, graph, [message], countdown)


def publish_together(app: Celery, graph: Graph, messages: list[Payload], countdown: float | None = None) -> None:
    """Send node messages of one implementation and queue as a single task message.

    One message carries `msg`; several carry `msgs`, run one after the other by the task
    (a fan-out then costs one queue send, receive and delete per group instead of per node).
    Each payload is stamped with `sent` (and `due` when delayed) before it goes out, and `sent`
    again once the send returned, so a ledger entry written after it records a time no earlier
    than the queue's insertion of the message, however slow the send (reconcile counts a message
    as still queued when the queue's oldest message is not younger than its `sent`).
    """
    node = graph.nodes[messages[0]["node"]]
    options: dict[str, Any] = {}
    if node.config.queue:
        options["queue"] = node.config.queue
    now = time.time()
    for message in messages:
        message["sent"] = now
        message.pop("due", None)
        if countdown:
            message["due"] = now + countdown
    if countdown:
        options["countdown"] = countdown
    timeout = node.config.timeout_seconds
    if timeout:
        options["soft_time_limit"] = timeout * 1.5 + 1
    kwargs = {"msg": messages[0]} if len(messages) == 1 else {"msgs": messages}
    app.send_task(node_task_name(node.uses), kwargs=kwargs, **options)
    sent = time.time()
    for message in messages:
        message["sent"] = sent


def publish_groups(app: Celery, graph: Graph, groups: list[list[Payload]]) -> None:
    """Send several task messages in one go: on `azurequeue://` the immediate ones to a queue
    travel as few Azure messages (bundles; each stays its own Celery task). Every payload's
    `sent` is stamped again once all sends returned."""
    with bundled():
        for group in groups:
            publish_together(app, graph, group)
    sent = time.time()
    for group in groups:
        for message in group:
            message["sent"] = sent


def child_run_id(run_id: str, node_id: str, iteration: int, attempt: int = 1) -> str:
    """The id of a subflow node's child run: derived from the node execution and its attempt
    (so a redelivery finds the same child, and each attempt starts a child of its own; the
    first attempt's id has no attempt part), and hashed when it would exceed the id length limit."""
    plain = f"{run_id}.{node_id}.{iteration}" + (f".a{attempt}" if attempt > 1 else "")
    if len(plain) <= MAX_ID_LENGTH:
        return plain
    digest = hashlib.sha256(plain.encode()).hexdigest()[:40]
    return f"{run_id[:MAX_ID_LENGTH - 42]}.{digest}"


def broker_endpoint(app: Celery) -> str:
    """Where the broker is, for messages: the queue endpoint of the storage account when known."""
    url = str(app.conf.broker_url or "")
    if url.startswith("azurequeue://") and "@" not in url:
        conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "")
        parts = dict(p.split("=", 1) for p in conn.split(";") if "=" in p)
        if parts.get("QueueEndpoint"):
            return parts["QueueEndpoint"]
        if parts.get("AccountName"):
            return f"https://{parts['AccountName']}.queue.{parts.get('EndpointSuffix', 'core.windows.net')}"
        return "azurequeue:// (no AZURE_STORAGE_CONNECTION_STRING)"
    return url.split("@", 1)[-1] if "@" in url else url


def publish_within(app: Celery, graph: Graph, messages: Iterable[Payload], timeout: float) -> None:
    """Publish messages (one task each), giving up after `timeout` seconds (InfrastructureError
    naming the broker endpoint): the SDK's own retries against an unreachable endpoint take minutes."""
    failure: list[BaseException] = []

    def send() -> None:
        try:
            publish_groups(app, graph, [[message] for message in messages])
        except BaseException as exc:  # reported by the caller's thread
            failure.append(exc)

    sender = threading.Thread(target=send, name="flowcraft-start-publish", daemon=True)
    sender.start()
    sender.join(timeout)
    where = f"broker at {broker_endpoint(app)}"
    if sender.is_alive():
        raise InfrastructureError(f"{where} did not take the start messages within {timeout:g} s")
    if failure:
        raise InfrastructureError.wrap(where, failure[0]) from failure[0]


#: Graphs of the blueprints this process ran, by blueprint object: building one (cycle analysis
#: included) costs about a millisecond per 100 nodes, and every node task needs it. A Graph never
#: changes (`extend` returns a new one), so one per blueprint is shared.
_GRAPHS: dict[int, tuple[Blueprint, Graph]] = {}
_GRAPHS_KEPT = 256


def blueprint_graph(blueprint: Blueprint) -> Graph:
    """The graph of a blueprint, built once per blueprint object in this process."""
    cached = _GRAPHS.get(id(blueprint))
    if cached is None or cached[0] is not blueprint:
        if len(_GRAPHS) >= _GRAPHS_KEPT:
            _GRAPHS.clear()
        cached = _GRAPHS[id(blueprint)] = (blueprint, Graph(blueprint))
    return cached[1]


def run_graph(rt: Runtime, blueprint: Blueprint, run_id: str, dynamic: bool) -> Graph:
    """The run's graph: the blueprint plus, when it has any, the dynamic nodes added so far."""
    graph = blueprint_graph(blueprint)
    if dynamic:  # the graph orders additions by (iteration, parent), whatever order Redis returns
        graph = graph.extend(DynamicAddition.from_dict(d) for d in rt.ledger.dynamic(run_id))
    return graph


def start_run(app: Celery, rt: Runtime, blueprint_id: str, context: Mapping[str, Any] | None = None,
              run_id: str | None = None, start_input: Any = None,
              parent: Mapping[str, Any] | None = None) -> str:
    """Validate, then write the context, ledger and status and publish the start messages, all
    or nothing (see the module docstring); return the run id."""
    blueprint = rt.blueprints.get(blueprint_id)
    if blueprint is None:
        known = ", ".join(sorted(rt.blueprints)) or "none"
        raise RunError(f"unknown blueprint {blueprint_id!r} (known: {known})")
    validate_or_raise(blueprint, rt.implementations(), rt.blueprints)
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
    now = time.time()
    doc = RunStatusDoc(runId=run_id, blueprintId=blueprint.id, blueprintVersion=blueprint.run_version,
                       status="running", createdAt=now, lastUpdated=now, errors=[], awaiting=[],
                       generation=1, sleeping={})
    if start_input is not None:
        doc["startInput"] = start_input
    if parent:
        doc.update(parent)  # type: ignore[typeddict-item]
    graph = Graph(blueprint)
    messages = {token(n, 0): payload(run_id, blueprint, n, 0, start_input) for n in start_nodes(graph)}
    for message in messages.values():
        message["sent"] = now
    written: list[str] = []
    try:
        written.append("context")
        rt.contexts.create_run(run_id, dict(context or {}))
        written.append("ledger")
        rt.ledger.begin(run_id, 1, messages)
        written.append("status")
        rt.statuses.create(doc)
        rt.arm(run_id)
        timeout = float(app.conf.get("flowcraft_start_timeout") or START_TIMEOUT)
        queued = {name: dict(message) for name, message in messages.items()}  # as the ledger holds them
        publish_within(app, graph, list(messages.values()), timeout)
    except Exception as exc:
        _take_back(rt, run_id, written)
        raise StartError(f"run {run_id} not started: {exc}".splitlines()[0]) from exc
    with contextlib.suppress(Exception):  # best effort: the earlier stamp only makes reconcile re-send sooner
        # their `sent` is now after the queue took them; an entry a start node already moved on from stays
        rt.ledger.settle(run_id, "", {name: (queued[name], message) for name, message in messages.items()})
    return run_id


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


def complete_run(app: Celery, rt: Runtime, run_id: str, context: dict[str, Any] | None = None) -> bool:
    """Finish a run as `completed` with its final context (callers check the durable evidence
    first: `recovery.complete`)."""
    done = rt.statuses.finish(run_id, "completed", final_result(rt, run_id, "completed", [], context), [])
    if done:
        retire(rt, run_id, "completed")
        notify_parent(app, rt, run_id)
    return done


def fail_run(app: Celery, rt: Runtime, run_id: str, errors: list[dict[str, Any]],
             status: Literal["failed", "stalled"] = "failed") -> bool:
    """Halt a run and record it `failed` (or `stalled`: a join it reached can never run) with its errors."""
    rt.ledger.halt(run_id, status)
    arm_parent(rt, rt.statuses.get(run_id))
    done = rt.statuses.finish(run_id, status, final_result(rt, run_id, status, errors), errors)
    if done:
        retire(rt, run_id, status)
        notify_parent(app, rt, run_id)
    return done


def retire(rt: Runtime, run_id: str, status: str) -> None:
    """A final run: halted in Redis (late messages are dropped), out of reconcile's due index, its
    records expiring after the retention."""
    rt.ledger.halt(run_id, status)
    rt.due.forget([run_id])
    expire_finished_run(rt, run_id)


def arm_parent(rt: Runtime, doc: RunStatusDoc | None) -> None:
    """Before a child run ends: its parent, parked while it waits, is due again (so reconcile tells
    it of the end if the news is lost)."""
    if doc and doc.get("parentRunId"):
        rt.arm(str(doc["parentRunId"]))


def notify_parent(app: Celery, rt: Runtime, run_id: str) -> None:
    """Tell a subflow's parent node that the child run ended (or paused)."""
    doc = rt.statuses.get(run_id)
    if not doc or not doc.get("parentRunId"):
        return
    parent_run = str(doc["parentRunId"])
    parent_doc = rt.statuses.get(parent_run)
    blueprint = rt.blueprints.get(str(parent_doc.get("blueprintId"))) if parent_doc else None
    if parent_doc is None or blueprint is None:
        return
    node_id = str(doc.get("parentNodeId"))
    iteration = int(doc.get("parentIteration", 0) or 0)
    child = {"runId": run_id, "status": doc.get("status")}
    message = payload(parent_run, blueprint, node_id, iteration, None, dynamic=True, child=child)
    rt.arm(parent_run)
    publish(app, run_graph(rt, blueprint, parent_run, True), message)


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
    if rt.ledger.generation(run_id) is None:  # Redis lost the run's state: rebuild it first
        from flowcraft_celery.distributed.recovery import ensure_state  # recovery builds on this module

        if ensure_state(app, rt, run_id) != "live":
            raise RunError(f"run {run_id!r} cannot be resumed right now (its state is being rebuilt); try again")
    awaiting = rt.ledger.awaiting(run_id)
    blueprint = rt.blueprints.get(str(doc.get("blueprintId")))
    if blueprint is None:
        raise RunError(f"run {run_id!r} cannot be resumed here: its blueprint {doc.get('blueprintId')!r} is not known")
    static = blueprint_graph(blueprint)  # a dynamic node is known to the run's graph only
    dynamic = node_id is not None and node_id not in static.nodes and node_id.rpartition("@")[0] not in static.nodes
    node_token = awaiting_choice(run_graph(rt, blueprint, run_id, True) if dynamic else static, run_id, awaiting,
                                 node_id)
    pending = rt.ledger.pending(run_id).get(node_token)
    if pending is None:
        raise RunError(f"run {run_id!r} has no pending message for {node_token!r}")
    graph = run_graph(rt, blueprint, run_id, bool(pending.get("dyn")))
    if graph.nodes[pending["node"]].uses == "subflow":  # the child resumes its node and releases this run
        resume_run(app, rt, str(pending.get("childRun") or ""), action, output)
        return node_token
    try:
        check_resume_action(graph, pending["node"], action, int(pending.get("it", 0)))
        check_json(output, "resume output")
    except ValueError as exc:
        raise RunError(f"resume of run {run_id!r} refused: {exc}") from exc
    remaining = rt.ledger.unawait_token(run_id, node_token)
    rt.statuses.update(run_id, {"status": "awaiting" if remaining else "running", "awaiting": remaining})
    if not remaining:
        _unawait_parents(rt, doc)
    if pending.get("webhook"):  # a webhook node's output is its URL and the body it received
        output = webhook_output(str(pending["webhook"]), output)
    message = dict(pending, resume={"action": action, "output": output})
    rt.arm(run_id)
    rt.ledger.update_pending(run_id, node_token, message)
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
    done = rt.statuses.finish(run_id, "cancelled", final_result(rt, run_id, "cancelled", []), [])
    if done:
        retire(rt, run_id, "cancelled")
    for message in rt.ledger.pending(run_id).values():  # its subflows' child runs
        child = message.get("childRun")
        if child and rt.statuses.get(str(child)) is not None:
            cancel_run(rt, str(child))
    return done
