"""The local runner: a whole run in one process, moving work through a timed queue.

Every semantic decision is the engine's; this module only schedules (attempts, retry pauses,
sleeps), keeps state in the given stores (memory by default) and reports events.
"""

from __future__ import annotations

import heapq
import itertools
import time
import uuid
from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from flowcraft_celery.engine import dispatch, semantics
from flowcraft_celery.engine.builtins import (
    AWAITING_BUILTINS,
    BUILTIN_REGISTRY,
    DEFAULT_SUBFLOW_DEPTH,
    DEFAULT_WEBHOOK_BASE_URL,
    RUNNER_BUILTINS,
    new_webhook_secret,
    subflow_depth_message,
    subflow_failure,
    subflow_initial_context,
    subflow_output,
    webhook_key,
    webhook_output,
    webhook_secret_matches,
    webhook_url,
)
from flowcraft_celery.engine.context import NodeContext, RunContext
from flowcraft_celery.engine.invoke import NodeAttemptError, run_attempt, run_fallback
from flowcraft_celery.engine.registry import NodeResult, Registry, default_registry
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.durations import sleep_seconds
from flowcraft_celery.model.graph import Graph, start_nodes
from flowcraft_celery.model.ids import check_id
from flowcraft_celery.model.json_values import check_json
from flowcraft_celery.model.validation import validate_or_raise
from flowcraft_celery.stores.base import MISSING, ContextStore, CoordinationStore, StatusStore
from flowcraft_celery.stores.faults import PermanentError
from flowcraft_celery.stores.memory import (
    MemoryContextStore,
    MemoryCoordinationStore,
    MemoryStatusStore,
)

EventSink = Callable[[str, dict[str, Any]], None]


@dataclass
class RunResult:
    """A run's outcome: `{status, context, errors}` plus its id."""

    run_id: str
    status: str
    context: dict[str, Any]
    errors: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form printed by `flowcraft-celery run`."""
        return {"runId": self.run_id, "status": self.status, "context": self.context, "errors": self.errors}


@dataclass(order=True)
class _Item:
    """A unit of scheduled work: execute a node attempt, or finish a sleep."""

    due: float
    seq: int
    kind: str = field(compare=False)
    node_id: str = field(compare=False)
    iteration: int = field(compare=False)
    value: Any = field(compare=False, default=None)
    attempt: int = field(compare=False, default=1)
    prepared: Any = field(compare=False, default=MISSING)


@dataclass
class _Run:
    """Live state of one run inside the runner."""

    run_id: str
    graph: Graph
    queue: list[_Item] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    awaiting: dict[str, tuple[int, Any]] = field(default_factory=dict)
    children: dict[str, str] = field(default_factory=dict)
    webhooks: dict[str, str] = field(default_factory=dict)
    #: The attempt of each subflow node execution whose child run is under way: (node, iteration) -> its item.
    subflows: dict[tuple[str, int], _Item] = field(default_factory=dict)
    joins: dispatch.JoinWatch = field(default_factory=dispatch.JoinWatch)
    depth: int = 0
    failed: bool = False
    cancelled: bool = False
    stalled: bool = False


class LocalRunner:
    """Runs blueprints in-process: `run(blueprint, context)`, then `resume(run_id, ...)` if awaiting."""

    def __init__(
        self,
        registry: Registry | None = None,
        blueprints: Mapping[str, Blueprint] | None = None,
        deps: Mapping[str, Any] | None = None,
        on_event: EventSink | None = None,
        context_store: ContextStore | None = None,
        status_store: StatusStore | None = None,
        coordination: CoordinationStore | None = None,
        max_subflow_depth: int = DEFAULT_SUBFLOW_DEPTH,
        webhook_base_url: str = DEFAULT_WEBHOOK_BASE_URL,
    ) -> None:
        self.max_subflow_depth = max_subflow_depth
        self.webhook_base_url = webhook_base_url
        self.registry = BUILTIN_REGISTRY.merged(registry or default_registry)
        # a ChainMap keeps a lazy catalog lazy: a lookup reads only the blueprint it needs
        given = cast("dict[str, Blueprint]", {} if blueprints is None else blueprints)
        self.blueprints: ChainMap[str, Blueprint] = ChainMap({}, given)
        self.deps = dict(deps or {})
        self.on_event = on_event
        self.contexts: ContextStore = context_store or MemoryContextStore()
        self.statuses: StatusStore = status_store or MemoryStatusStore()
        self.coordination: CoordinationStore = coordination or MemoryCoordinationStore()
        self._runs: dict[str, _Run] = {}
        self._seq = itertools.count()

    # -- public API -------------------------------------------------------------------------

    def run(self, blueprint: Blueprint, context: Mapping[str, Any] | None = None,
            run_id: str | None = None, start_input: Any = None) -> RunResult:
        """Validate and run a blueprint until it completes, fails or awaits an external event.

        Raises BlueprintValidationError for an invalid blueprint, InvalidIdError for a bad run
        id and NotJsonError for a context or input JSON cannot carry exactly.
        """
        return self._start(blueprint, context, run_id, start_input, depth=0)

    def _start(self, blueprint: Blueprint, context: Mapping[str, Any] | None, run_id: str | None,
               start_input: Any, depth: int) -> RunResult:
        validate_or_raise(blueprint, self.registry, self.blueprints)
        if run_id is not None:
            check_id("run", run_id)
        check_json(dict(context or {}), "initial context")
        check_json(start_input, "start input")
        self.blueprints.setdefault(blueprint.id, blueprint)
        run = _Run(run_id or uuid.uuid4().hex, Graph(blueprint), depth=depth)
        self._runs[run.run_id] = run
        now = time.time()
        self.contexts.create_run(run.run_id, dict(context or {}))
        self.statuses.create({
            "runId": run.run_id, "blueprintId": blueprint.id, "blueprintVersion": blueprint.run_version,
            "status": "running", "createdAt": now, "lastUpdated": now, "errors": [],
        })
        self._emit("workflow:start", run, None)
        for node_id in start_nodes(run.graph):
            self._schedule(run, "exec", node_id, 0, start_input)
        return self._drive(run)

    def resume(self, run_id: str, action: str | None = None, output: Any = None,
               node_id: str | None = None) -> RunResult:
        """Continue an awaiting run: `output` and `action` become the waiting node's result.
        `node_id` picks the waiting node: its id, or `node@2.5` / `node@2000005` for that iteration.

        The result is always the named run's own. Resuming a child run (a subflow's) resumes
        the parent runs waiting for it too, as far as they can go: `result(parent_run_id)`
        gives theirs.
        """
        named = run_id
        path: list[str | None] = [node_id]
        while (parent := self._awaiting_parent(run_id)) is not None:
            run_id, path = parent[0], [parent[1], *path]
        outermost = self._resume(run_id, action, output, path)
        return outermost if named == run_id else self.result(named)

    def result(self, run_id: str) -> RunResult:
        """A run's result as it stands: `{status, context, errors}` (KeyError for an unknown run)."""
        run = self._runs.get(run_id)
        if run is None:
            raise KeyError(f"no run {run_id!r} in this runner")
        return RunResult(run.run_id, self._status(run), self.contexts.snapshot(run_id), list(run.errors))

    def _awaiting_parent(self, run_id: str) -> tuple[str, str] | None:
        """The run and subflow node waiting for this child run, if any."""
        for run in self._runs.values():
            for node_id, child in run.children.items():
                if child == run_id and node_id in run.awaiting:
                    return run.run_id, node_id
        return None

    def _resume(self, run_id: str, action: str | None, output: Any, path: list[str | None]) -> RunResult:
        """Resume `path[0]` of this run (for a subflow node, `path[1:]` inside its child); every
        check happens before anything changes."""
        run = self._runs.get(run_id)
        if run is None:
            raise KeyError(f"no run {run_id!r} in this runner")
        if not run.awaiting:
            raise ValueError(f"run {run_id!r} is not awaiting (status {self._status(run)})")
        waiting = path[0] or next(iter(run.awaiting))
        if waiting not in run.awaiting:  # `node@2.5` or `node@2000005`: that iteration of it
            node_id, iteration = run.graph.execution(waiting)
            if node_id in run.awaiting and iteration in (None, run.awaiting[node_id][0]):
                waiting = node_id
        if waiting not in run.awaiting:
            shown = sorted(run.graph.execution_label(n, it) for n, (it, _) in run.awaiting.items())
            raise ValueError(f"node {waiting!r} of run {run_id!r} is not awaiting; awaiting: {shown}")
        iteration = run.awaiting[waiting][0]
        child = run.children.get(waiting)
        check_json(output, "resume output")
        if child is not None:
            child_result = self._resume(child, action, output, path[1:] or [None])
            self._resumed(run, waiting)
            self._finish_subflow(run, waiting, iteration, child_result)
        else:
            semantics.check_resume_action(run.graph, waiting, action, iteration)
            self._resumed(run, waiting)
            url = run.webhooks.pop(waiting, None)
            result_output = webhook_output(url, output) if url is not None else output
            self._succeed(run, waiting, iteration, NodeResult(output=result_output, action=action))
        return self._drive(run)

    def _resumed(self, run: _Run, node_id: str) -> None:
        """The node no longer awaits."""
        run.awaiting.pop(node_id)
        self.statuses.update(run.run_id, {"status": "running", "awaiting": sorted(run.awaiting)})
        self._emit("workflow:resume", run, node_id)

    def deliver_webhook(self, run_id: str, node_id: str, secret: str, body: Any,
                        action: str | None = None) -> RunResult:
        """What an HTTP POST to a webhook node's URL does: resume it with the body, if the secret
        is the one its URL carries (ValueError otherwise, and for a node no longer waiting).
        Returns that run's result, as `resume` does (a child run's own, its parents resumed too)."""
        run = self._runs.get(run_id)
        url = run.webhooks.get(node_id) if run is not None else None
        if url is None or not webhook_secret_matches(url, secret):
            raise ValueError(f"no webhook of run {run_id!r} node {node_id!r} with that token")
        return self.resume(run_id, action, body, node_id)

    def cancel(self, run_id: str) -> None:
        """Stop a run and its child runs: nothing starts afterwards; the result keeps its context."""
        run = self._runs[run_id]
        run.cancelled = True
        run.queue.clear()
        run.awaiting.clear()
        for child in run.children.values():
            if self._status(self._runs[child]) in ("running", "awaiting"):
                self.cancel(child)
        context = self.contexts.snapshot(run_id)
        self.statuses.finish(run_id, "cancelled", {"status": "cancelled", "context": context, "errors": run.errors},
                             run.errors)

    # -- scheduling -------------------------------------------------------------------------

    def _schedule(self, run: _Run, kind: str, node_id: str, iteration: int, value: Any,
                  attempt: int = 1, delay: float = 0.0, prepared: Any = MISSING) -> None:
        heapq.heappush(run.queue, _Item(time.monotonic() + delay, next(self._seq), kind, node_id,
                                        iteration, value, attempt, prepared))

    def _drive(self, run: _Run) -> RunResult:
        """Process scheduled work in due order until none is left."""
        while run.queue and not run.cancelled:
            item = heapq.heappop(run.queue)
            pause = item.due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if run.failed:
                continue
            if item.kind == "wake":
                self.statuses.update(run.run_id, {"wakeAt": None})
                self._succeed(run, item.node_id, item.iteration, NodeResult(output=item.value))
            else:
                self._execute(run, item)
        return self._result(run)

    def _status(self, run: _Run) -> str:
        if run.cancelled:
            return "cancelled"
        if run.failed:
            return "failed"
        if run.stalled:
            return "stalled"
        if run.awaiting:
            return "awaiting"
        return "completed" if not run.queue else "running"

    def _check_stalled(self, run: _Run) -> None:
        """No work is left: a join reached that never fired makes the run `stalled`, never `completed`."""
        if run.queue or run.awaiting or run.failed or run.cancelled or run.stalled:
            return
        stalled = run.joins.stalled(run.graph)
        if stalled:
            run.errors += [join.to_error(run.graph) for join in stalled]
            run.stalled = True

    def _result(self, run: _Run) -> RunResult:
        self._check_stalled(run)
        status = self._status(run)
        context = self.contexts.snapshot(run.run_id)
        if status == "awaiting":
            self.statuses.update(run.run_id, {"status": "awaiting", "awaiting": sorted(run.awaiting)})
            self._emit("workflow:pause", run, None)
        elif status in ("completed", "failed", "stalled"):
            self.statuses.finish(run.run_id, status,  # type: ignore[arg-type]
                                 {"status": status, "context": context, "errors": run.errors}, run.errors)
            self._emit("workflow:finish", run, None, status=status)
        return RunResult(run.run_id, status, context, list(run.errors))

    # -- executing nodes --------------------------------------------------------------------

    def _lookup(self, run: _Run) -> semantics.Lookup:
        return lambda key: self.contexts.get(run.run_id, key)

    def _execute(self, run: _Run, item: _Item) -> None:
        node = run.graph.node(item.node_id, item.iteration)
        if self.contexts.get_output(run.run_id, node.id, item.iteration) is not None:
            return
        node_input = semantics.resolve_input(run.graph, node, item.value, self._lookup(run), item.iteration)
        if node.uses in RUNNER_BUILTINS:
            self._run_builtin(run, item, node_input)
            return
        ctx = NodeContext(
            input=node_input, params=dict(node.params), context=RunContext(self.contexts, run.run_id),
            run_id=run.run_id, node_id=node.id, blueprint_id=run.graph.blueprint.id,
            iteration=item.iteration, attempt=item.attempt, deps=self.deps,
        )
        self._emit("node:start", run, node.id, attempt=item.attempt)
        try:
            impl = self.registry.get(node.uses)
            result = run_attempt(impl, ctx, node.config.timeout_seconds, item.prepared)
        except NodeAttemptError as error:
            self._attempt_failed(run, item, ctx, error)
            return
        self._succeed(run, node.id, item.iteration, result)

    def _attempt_failed(self, run: _Run, item: _Item, ctx: NodeContext, error: NodeAttemptError) -> None:
        """Retry, fall back (a class node's own `fallback()` first), or fail the run (§3.9)."""
        uses = run.graph.nodes[item.node_id].uses
        self._after_failure(run, item, error.to_record(), error.retriable, error.prepared,
                            lambda: run_fallback(self.registry.get(uses), error, ctx))

    def _after_failure(self, run: _Run, item: _Item, record: dict[str, Any], retriable: bool = True,
                       prepared: Any = MISSING, own: Callable[[], NodeResult | None] | None = None) -> None:
        """After a failed attempt of any node (a subflow's child run that did not complete too):
        the engine's next step, another attempt, the fallback node, or the run's failure."""
        node_id = item.node_id
        self._emit("node:error", run, node_id, error=record.get("message"), attempt=item.attempt)
        step = semantics.after_failure(run.graph, node_id, item.attempt, retriable)
        if step.retry:
            self._emit("node:retry", run, node_id, attempt=step.attempt)
            self._schedule(run, "exec", node_id, item.iteration, item.value, step.attempt, step.delay, prepared)
            return
        result = own() if own is not None else None
        if result is not None:
            self._succeed(run, node_id, item.iteration, result)
        elif step.fallback:
            self._emit("node:fallback", run, node_id, fallback=step.fallback)
            self._schedule(run, "exec", step.fallback, item.iteration, item.value)
        else:
            self._fail(run, record)

    def _fail(self, run: _Run, record: dict[str, Any]) -> None:
        run.errors.append(record)
        run.failed = True

    def _succeed(self, run: _Run, node_id: str, iteration: int, result: NodeResult) -> None:
        """Decide where the execution goes, record output and decision once, add dynamic nodes,
        and deliver the transitions the decision causes."""
        try:
            graph, _ = semantics.add_dynamic_nodes(run.graph, node_id, iteration, result, self.registry,
                                                   self.blueprints)
            decision = semantics.decide(graph, node_id, iteration, result, self._lookup(run))
        except Exception as exc:  # a bad expression value or dynamic node fails the node
            self._fail(run, {"nodeId": node_id, "message": str(exc), "type": type(exc).__name__})
            return
        try:
            if not self.contexts.record_output(run.run_id, node_id, iteration, result.output, result.action,
                                               result.dynamic_nodes, decision.to_dict()):
                return
        except PermanentError as exc:  # an output no store can hold fails the node, as on Celery
            self._fail(run, {"nodeId": node_id, "message": str(exc), "type": type(exc).__name__})
            return
        run.graph = graph
        for original in graph.fallback_chain(node_id):  # each node this fallback stood in for
            self.contexts.record_output(run.run_id, original, iteration, result.output, result.action,
                                        decision=decision.to_dict())
        try:
            transitions = semantics.after_decision(graph, iteration, result.output, decision)
        except Exception as exc:  # a loop past its bound
            self._fail(run, {"nodeId": node_id, "message": str(exc), "type": type(exc).__name__})
            return
        self._emit("node:finish", run, node_id, action=result.action)

        def skipped(target: str, _: int) -> None:
            self._emit("node:skipped", run, target)

        for start in dispatch.route(run.graph, run.run_id, transitions, self.coordination, skipped, run.joins):
            self._schedule(run, "exec", start.node_id, start.iteration, start.value)

    # -- runner built-ins -------------------------------------------------------------------

    def _run_builtin(self, run: _Run, item: _Item, node_input: Any) -> None:
        node_id, iteration = item.node_id, item.iteration
        node = run.graph.nodes[node_id]
        self._emit("node:start", run, node_id, attempt=item.attempt)
        if node.uses == "sleep":
            try:
                seconds = sleep_seconds(node.params, node_id)
            except ValueError as exc:
                self._fail(run, {"nodeId": node_id, "message": str(exc), "type": "ValueError"})
                return
            self.statuses.update(run.run_id, {"wakeAt": time.time() + seconds})
            self._schedule(run, "wake", node_id, iteration, node_input, delay=seconds)
        elif node.uses in AWAITING_BUILTINS:
            run.awaiting[node_id] = (iteration, node_input)
            if node.uses == "webhook":
                url = webhook_url(self.webhook_base_url, run.run_id, node_id, iteration, new_webhook_secret())
                run.webhooks[node_id] = url
                self.contexts.set(run.run_id, webhook_key(node_id), url)
        else:
            self._start_subflow(run, item, node_input)

    def _start_subflow(self, run: _Run, item: _Item, node_input: Any) -> None:
        """Run the child blueprint (a new child run per attempt); its outcome completes this node,
        pauses it, or is a failed attempt of it."""
        node_id, iteration = item.node_id, item.iteration
        params = run.graph.nodes[node_id].params
        child_id = str(params.get("blueprintId"))
        child_bp = self.blueprints.get(child_id)
        if child_bp is None:
            self._fail(run, {"nodeId": node_id, "message": f"subflow blueprint {child_id!r} is not known",
                             "type": "LookupError"})
            return
        if run.depth >= self.max_subflow_depth:
            self._fail(run, {"nodeId": node_id, "type": "SubflowDepthError",
                             "message": subflow_depth_message(node_id, child_id, self.max_subflow_depth)})
            return
        initial, to_starts = subflow_initial_context(params, node_input, self._lookup(run))
        try:
            child = self._start(child_bp, initial, None, node_input if to_starts else None, run.depth + 1)
        except ValueError as exc:  # invalid child blueprint or values
            self._fail(run, {"nodeId": node_id, "message": str(exc), "type": type(exc).__name__})
            return
        run.subflows[(node_id, iteration)] = item
        if child.status == "awaiting":
            run.children[node_id] = child.run_id
            run.awaiting[node_id] = (iteration, node_input)
            return
        self._finish_subflow(run, node_id, iteration, child)

    def _finish_subflow(self, run: _Run, node_id: str, iteration: int, child: RunResult) -> None:
        """A child run paused or ended: the node waits with it, succeeds, or failed this attempt."""
        if child.status == "awaiting":
            run.awaiting[node_id] = (iteration, None)
            return
        item = run.subflows.pop((node_id, iteration), None) or _Item(0, 0, "exec", node_id, iteration)
        if child.status != "completed":
            record = {"nodeId": node_id, "message": subflow_failure(child.run_id, child.status, child.errors),
                      "type": "SubflowError", "attempt": item.attempt}
            self._after_failure(run, item, record)
            return
        output, copies = subflow_output(run.graph.nodes[node_id].params, self._runs[child.run_id].graph,
                                        child.context)
        for key, value in copies.items():
            self.contexts.set(run.run_id, key, value)
        self._succeed(run, node_id, iteration, NodeResult(output=output))

    def _emit(self, event: str, run: _Run, node_id: str | None, **data: Any) -> None:
        if self.on_event is not None:
            payload = {"runId": run.run_id, "blueprintId": run.graph.blueprint.id, **data}
            if node_id is not None:
                payload["nodeId"] = node_id
            self.on_event(event, payload)

