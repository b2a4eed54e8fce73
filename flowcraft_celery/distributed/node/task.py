"""The Celery side of a run: one task per node implementation, executing one node message.

A message is handled at least once and takes effect once: a finished token is dropped, a
recorded output is reused instead of running the node again, an execution lock keeps two
copies of one message from running at the same time, and arrivals, claims and the pending
ledger are idempotent. Retries are task retries with a countdown (delayed messages). A task's
result names its run and the nodes it handled; its log lines name the node (`logcontext`).

Failures are sorted by `stores.faults.classify`: an infrastructure error (Cosmos, Redis or
the broker unreachable, also inside the node's `ctx.context` calls) re-sends the message with
back-off and never counts as an attempt; when only recording a finished node's output failed,
the re-sent message carries the result (`done`), so the write is retried, not the node. A
permanent error (a value the store cannot hold) fails the node at once.

A task message that is not a node message (other arguments, a payload of the wrong shape), a
message of a run that does not exist and a node that keeps killing its worker are poison: never
executed, moved to the dead-letter queue with the reason (`deadletter`).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded

from flowcraft_celery.distributed.core.logcontext import node_log_scope, start_task_record, task_summary
from flowcraft_celery.distributed.core.message import MessageError, NodeMessage, node_message, task_messages
from flowcraft_celery.distributed.core.runtime import Runtime, runtime_for
from flowcraft_celery.distributed.core.tracing import message_context, span
from flowcraft_celery.distributed.node.deadletter import dead_letter, dead_letter_arguments
from flowcraft_celery.distributed.node.lease import Held, lease
from flowcraft_celery.distributed.runs.awaiting import mark_awaiting
from flowcraft_celery.distributed.runs.ending import fail_run
from flowcraft_celery.distributed.runs.errors import RunError
from flowcraft_celery.distributed.runs.graphs import run_graph
from flowcraft_celery.distributed.runs.publishing import child_run_id, publish, publish_groups
from flowcraft_celery.distributed.runs.recovery import complete_run, ensure_state
from flowcraft_celery.distributed.runs.starting import start_run
from flowcraft_celery.distributed.runs.webhooks import register_webhook
from flowcraft_celery.engine import dispatch, semantics
from flowcraft_celery.engine.builtins import (
    AWAITING_BUILTINS,
    RUNNER_BUILTINS,
    subflow_depth_message,
    subflow_failure,
    subflow_initial_context,
    subflow_output,
)
from flowcraft_celery.engine.context import NodeContext, RunContext
from flowcraft_celery.engine.decisions import Decision
from flowcraft_celery.engine.invoke import NodeAttemptError, run_attempt, run_fallback
from flowcraft_celery.engine.registry import NodeResult
from flowcraft_celery.model.blueprint import NodeDefinition
from flowcraft_celery.model.durations import sleep_seconds
from flowcraft_celery.model.graph import DynamicAddition, Graph
from flowcraft_celery.stores.base import MISSING, RecordedOutput, RunStatusDoc
from flowcraft_celery.stores.faults import InfrastructureError, PermanentError, classify
from flowcraft_celery.stores.guard import TRANSIENT, log_level
from flowcraft_celery.stores.ledger import Entered, Lock, Settled
from flowcraft_celery.stores.timeline import Attempt, Write

logger = logging.getLogger("flowcraft.bridge")

#: Re-deliveries of a message whose blueprint version differs before the run is failed.
VERSION_MISMATCH_RETRIES = 5
#: Longest back-off between retries of a message whose store or broker call failed.
MAX_BACKOFF_SECONDS = 60
#: Retries of a message that failed with an unexpected error (not infrastructure) before its
#: run is failed with that error; infrastructure errors are retried for as long as they last.
UNEXPECTED_RETRIES = 10


def register_node_tasks(app: Celery, uses_keys: list[str]) -> None:
    """Register `flowcraft.node.<uses>` for each implementation the worker knows."""
    for uses in uses_keys:
        name = f"flowcraft.node.{uses}"
        if name in app.tasks:
            continue

        def run_node(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
            try:
                members = task_messages(args, kwargs)
            except MessageError as exc:  # a poison message: never executed, never retried
                _dead_letter_poison(self, args, kwargs, str(exc))
                return {"deadLettered": str(exc)}
            handled = start_task_record()
            try:
                rt = runtime_for(self.app.conf)
                packed = "msgs" in kwargs
                for member in members:  # finished members of a retried group are dropped
                    NodeExecution(self, rt, member, own_message=not packed).handle()
            except (Retry, Reject):
                raise
            except Exception as exc:
                _retry_later(self, members, exc)
            return task_summary(members, handled)

        app.task(name=name, bind=True, ignore_result=False, acks_late=True, max_retries=None)(run_node)


def _dead_letter_poison(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], problem: str) -> None:
    """Move a task message that is not a node message to the dead-letter queue with the reason;
    if even that send fails, reject it (the transport dead-letters a rejected message)."""
    reason = f"not a flowcraft node message: {problem}"[:500]
    try:
        dead_letter_arguments(task.app, task, args, kwargs, reason)
    except Exception as exc:
        logger.log(log_level(exc, logging.WARNING), "could not dead-letter a %s message (%s): %s; rejecting it",
                   task.name, reason, exc)
        raise Reject(reason, requeue=False) from exc


def _retry_later(task: Task, members: list[NodeMessage], exc: Exception) -> None:
    """Re-send the message with back-off after a store or broker failure (for as long as it
    lasts); an unexpected error fails the run after UNEXPECTED_RETRIES tries."""
    run_id = members[0].run_id
    retries = int(task.request.retries or 0)
    if classify(exc) == "infrastructure" or isinstance(exc, TRANSIENT):
        logger.log(log_level(exc, logging.WARNING, logging.DEBUG), "node message of run %s: %s; retry %s in %s s",
                   run_id, exc, retries + 1, min(MAX_BACKOFF_SECONDS, 2 ** retries))
        error: Exception = exc if isinstance(exc, InfrastructureError) else InfrastructureError.wrap("broker", exc)
    else:
        logger.exception("node message of run %s could not be processed", run_id)
        if retries >= UNEXPECTED_RETRIES:
            rt = runtime_for(task.app.conf)
            record = {"nodeId": members[0].node_id, "type": type(exc).__name__,
                      "message": f"node message could not be processed {retries + 1} times: {exc}"}
            fail_run(task.app, rt, run_id, [record])
            return
        error = InfrastructureError(f"{type(exc).__name__}: {exc}"[:500])
    countdown = min(MAX_BACKOFF_SECONDS, 2 ** retries)
    _note_delay(task, members, countdown)
    raise task.retry(exc=error, countdown=countdown) from exc


def _note_delay(task: Task, members: list[NodeMessage], countdown: float) -> None:
    """Record in the ledger that these messages come back only after `countdown` seconds, so the
    reconciler does not re-send them meanwhile (best effort: Redis may be what failed)."""
    try:
        rt = runtime_for(task.app.conf)
        now = time.time()
        for member in members:
            rt.ledger.refresh_pending(member.run_id, member.token, member.sent_at(now, now + countdown).to_wire())
    except Exception as exc:
        logger.debug("could not note the delay of a retried message: %s", exc)


def _end_trace(trace: Attempt, state: str, retry_in: float | None = None) -> None:
    """Record how an attempt ended, best effort: the node's work is done by now, and a timeline
    that cannot be written (Redis unreachable) must not make the node run again."""
    try:
        trace.end(state, retry_in)
    except Exception as exc:
        logger.log(log_level(exc, logging.WARNING), "run %s node %s: could not record the attempt's end (%s): %s",
                   trace.run_id, trace.token, state, exc)


def _eta(task: Task) -> float:
    """The epoch time the task's message was due (its ETA), 0 when it had none."""
    eta = task.request.eta
    if not eta:
        return 0.0
    try:
        when = eta if isinstance(eta, datetime) else datetime.fromisoformat(str(eta))
    except ValueError:
        return 0.0
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _result_of(recorded: RecordedOutput) -> NodeResult:
    """The result a recorded output stands for."""
    return NodeResult(output=recorded.output, action=recorded.action, dynamic_nodes=list(recorded.dynamic_nodes))


def _decision_of(recorded: RecordedOutput) -> Decision | None:
    """The decision recorded with an output (None in a record of an older version: decided then)."""
    return None if recorded.decision is None else Decision.from_dict(recorded.decision)


def _is_json(value: Any) -> bool:
    """Whether a value can travel in a message (a `prep` result that cannot is prepared again)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


class NodeExecution:
    """Handles one node message end to end."""

    def __init__(self, task: Task, rt: Runtime, msg: NodeMessage, depth: int = 0, own_message: bool = True) -> None:
        self.task = task
        self.depth = depth
        #: Whether the task's Celery message is this payload alone (so a task retry re-sends it).
        self.own_message = own_message and depth == 0
        self.app: Celery = task.app
        self.rt = rt
        self.msg = msg
        self.run_id = msg.run_id
        self.node_id = msg.node_id
        self.iteration = msg.iteration
        self.token = msg.token
        #: Whether this execution noted that the token may have an output (`RunLedger.enter`).
        self._marked = False
        #: Whether this execution settled its token in the ledger (which ends its attempt).
        self._settled = False
        #: The execution lock this execution holds when settling may release it (same Redis).
        self._lease: tuple[Held, Lock] | None = None
        #: The timeline write of the attempt's end, made with the settle when it comes.
        self._ending: Write | None = None

    @node_log_scope
    def handle(self) -> None:
        """Handle the message in its span: a child of the execution that sent it (or, run inline,
        of the one running it)."""
        request = self.task.request
        attributes = {"flowcraft.run_id": self.run_id, "flowcraft.blueprint": self.msg.blueprint_id,
                      "flowcraft.node": self.node_id, "flowcraft.iteration": self.iteration,
                      "flowcraft.attempt": self.msg.attempt,
                      "flowcraft.worker": request.hostname or socket.gethostname(), "celery.task_id": request.id}
        with span(f"flowcraft.node {self.node_id}", attributes, message_context(request) if not self.depth else None):
            self._handle()

    def _handle(self) -> None:
        """Drop what is done or halted, rebuild a run whose Redis state was lost, check the
        blueprint, then run the node (an ordinary execution's message in one Redis command less:
        `_run_at_once`)."""
        if self._run_at_once():
            return
        state = self.rt.ledger.check(self.run_id, self.token)
        if state.lost and not (state.finished or state.halted):
            presence = ensure_state(self.app, self.rt, self.run_id)
            if presence == "unknown":
                self._unknown_run()
                return
            if presence == "busy":  # another worker is rebuilding the run's state right now
                self._requeue(self.msg, 2)
                return
            state = self.rt.ledger.check(self.run_id, self.token)
        if state.finished or state.halted:
            return
        if state.pending is None:
            self._dead_letter_unexpected(
                f"node execution {self.token} is not due in run {self.run_id}: no recorded decision has started it "
                "(an unknown node, a node not reached yet, or an iteration that is not current)")
            return
        self.entry = NodeMessage.from_wire(state.pending)
        problem = self._unexpected(self.entry)
        if problem is not None:
            self._dead_letter_unexpected(problem)
            return
        self.maybe_recorded = state.maybe_recorded
        blueprint = self.rt.blueprints.get(self.msg.blueprint_id)
        if blueprint is None:
            host = socket.gethostname()
            known = ", ".join(sorted(self.rt.blueprints)) or "none"
            self._fail({"nodeId": self.node_id, "type": "UnknownBlueprint", "message":
                        f"blueprint {self.msg.blueprint_id!r} is not known to worker {host} (known: {known})"})
            return
        self.graph = run_graph(self.rt, blueprint, self.run_id, self.msg.dynamic)
        if blueprint.run_version != self.msg.version:
            self._version_mismatch(blueprint.run_version)
            return
        if self.node_id not in self.graph.nodes:
            self._fail({"nodeId": self.node_id, "type": "UnknownNode",
                        "message": f"node {self.node_id!r} is not in blueprint {blueprint.id!r}"})
            return
        self.blueprint = blueprint
        done, resumed, child = self.msg.done, self.msg.resume, self.msg.child
        if done is not None:  # the node finished earlier; recording its result failed then
            decided = done.get("decision")
            self._succeed(NodeResult(output=done.get("output"), action=done.get("action"),
                                     dynamic_nodes=done.get("dynamicNodes") or []),
                          Decision.from_dict(decided) if isinstance(decided, dict) else None)
        elif resumed is not None:
            self._succeed(NodeResult(output=resumed.get("output"), action=resumed.get("action")))
        elif child is not None:
            self._child_ended(child)
        elif self.msg.wake:
            self._succeed(NodeResult(output=self.msg.value))
        else:
            self._execute()

    # -- execution --------------------------------------------------------------------------

    def _lookup(self, key: str) -> Any:
        return self.rt.contexts.get(self.run_id, key)

    def _execute(self) -> None:
        recorded = self.rt.contexts.get_output(self.run_id, self.node_id, self.iteration) \
            if self.maybe_recorded else None
        if recorded is not None:
            self._succeed(_result_of(recorded), _decision_of(recorded), recorded=True)
            return
        node = self.graph.nodes[self.node_id]
        node_input = semantics.resolve_input(self.graph, node, self.msg.value, self._lookup, self.iteration)
        if node.uses in RUNNER_BUILTINS:
            self._builtin(node.uses, node_input)
            return
        self._run_leased(node, node_input)

    def _run_at_once(self) -> bool:
        """Run an ordinary node's own message without `check` first: what the message says is
        checked here (blueprint and version known, the node an ordinary one), and what the run
        says is checked by the ledger's enter script, which counts the attempt only for a run
        whose state is there, not halted, with this token pending as this message names it. False
        (nothing done) when the message or the run needs the full path of `_handle`."""
        msg = self.msg
        if msg.done is not None or msg.resume is not None or msg.child is not None or msg.wake:
            return False
        blueprint = self.rt.blueprints.get(msg.blueprint_id)
        if blueprint is None or blueprint.run_version != msg.version \
                or self._ledger_lock_key(f"exec:{self.run_id}:{self.token}") is None:
            return False
        graph = run_graph(self.rt, blueprint, self.run_id, msg.dynamic)
        node = graph.nodes.get(self.node_id)
        if node is None or node.uses in RUNNER_BUILTINS:
            return False
        self.blueprint, self.graph = blueprint, graph
        node_input = semantics.resolve_input(graph, node, msg.value, self._lookup, self.iteration)
        return self._run_leased(node, node_input, (msg.blueprint_id, msg.version))

    def _run_leased(self, node: NodeDefinition, node_input: Any, expect: tuple[str, str | None] | None = None
                    ) -> bool:
        """Run the node under its execution lock (another copy of the message running it: the
        message comes back later). With `expect` (the blueprint and version the message names),
        the ledger also checks that the token is pending with them: when it is not (or the run's
        state is lost) nothing was counted and False says so, once the lock is released."""
        name = f"exec:{self.run_id}:{self.token}"
        lock_key = self._ledger_lock_key(name)
        entered: list[Entered] = []
        started, begin = self.rt.timeline.beginning(self.run_id, self.token, node.uses, self.msg.attempt,
                                                    self.task.request.hostname or socket.gethostname(),
                                                    self._queue_wait())

        def enter_holding(owner: str, ttl: float) -> bool:
            assert lock_key is not None
            result = self.rt.ledger.enter(self.run_id, self.token, Lock(lock_key, owner, ttl), begin,
                                          self.rt.settings.crash_limit, expect)
            if result.held:
                entered.append(result)
            return result.held

        with lease(self.rt.coordination, name, on_renew=lambda: self.rt.touch(self.run_id),
                   acquire=enter_holding if lock_key is not None else None) as held:
            if not held:  # another copy of this message is running it right now
                self._requeue(self.msg, 5)
                return True
            again, attempts, _, begun = entered[0] if entered else self.rt.ledger.enter(self.run_id, self.token)
            if again.finished or again.halted:  # a copy that held the lease before us finished it
                return True
            if expect is not None and not attempts:  # lost, not pending, or pending as another message
                return False
            if lock_key is not None:
                self._lease = (held, Lock(lock_key, held.owner, 0.0))
            if again.pending is not None:
                self.entry = NodeMessage.from_wire(again.pending)
            self._marked = attempts > 0
            try:
                recorded = self.rt.contexts.get_output(self.run_id, self.node_id, self.iteration) \
                    if again.maybe_recorded else None
                if recorded is not None:
                    self._succeed(_result_of(recorded), _decision_of(recorded), recorded=True)
                    return True
                crashes = (attempts or self.rt.ledger.begin_attempt(self.run_id, self.token)) - 1
                if crashes >= self.rt.settings.crash_limit:
                    self._crash_loop(crashes)
                    return True
                self._attempt(node, node_input, started if begun else None)
            finally:
                self._end_attempt()
        return True

    def _ledger_lock_key(self, name: str) -> str | None:
        """The Redis key of lock `name` when the ledger can take and release it in its own scripts
        (the coordination store's locks live on the ledger's Redis), else None."""
        coordination = self.rt.coordination
        if getattr(coordination, "client", None) is not self.rt.ledger.client:
            return None
        return str(coordination.lock_key(name))  # type: ignore[attr-defined]

    def _end_attempt(self) -> None:
        """Note that the attempt ended (it did not crash its process), unless settling did."""
        if self._settled:
            return
        try:
            self.rt.ledger.end_attempt(self.run_id, self.token)
        except Exception as exc:
            logger.log(log_level(exc, logging.WARNING), "run %s node %s: could not note the end of the "
                       "attempt: %s", self.run_id, self.node_id, exc)

    def _crash_loop(self, crashes: int) -> None:
        """The node killed its worker process too often: fail the run and dead-letter the message."""
        reason = (f"node {self.node_id!r} crashed its worker process {crashes} times (limit "
                  f"{self.rt.settings.crash_limit}, FLOWCRAFT_MAX_NODE_CRASHES); its message was dead-lettered")
        self._fail({"nodeId": self.node_id, "type": "NodeCrashed", "message": reason, "crashes": crashes})
        dead_letter(self.app, self.task, self.msg, reason)

    def _attempt(self, node: NodeDefinition, node_input: Any, trace: Attempt | None = None) -> None:
        """One attempt of an ordinary node, then success or the failure path; `trace` is the
        attempt's timeline record when entering it began it already."""
        timeout = node.config.timeout_seconds
        attempt = self.msg.attempt
        if trace is None:
            trace = self.rt.timeline.begin(self.run_id, self.token, node.uses, attempt,
                                           self.task.request.hostname or socket.gethostname(), self._queue_wait())
        ctx = NodeContext(input=node_input, params=dict(node.params), context=RunContext(self.rt.contexts, self.run_id),
                          run_id=self.run_id, node_id=self.node_id, blueprint_id=self.blueprint.id,
                          iteration=self.iteration, attempt=attempt)
        try:
            impl = self.rt.registry.get(node.uses)
            try:
                result = run_attempt(impl, ctx, timeout, self.msg.prepared)
            except SoftTimeLimitExceeded as exc:
                raise NodeAttemptError(self.node_id, attempt, f"node {self.node_id!r} attempt {attempt} exceeded "
                                       f"its timeout of {int((timeout or 0) * 1000)} ms") from exc
        except NodeAttemptError as error:
            retrying = error.retriable and error.attempt < node.config.attempts
            _end_trace(trace, "retrying" if retrying else "failed", node.config.delay_seconds if retrying else None)
            self._attempt_failed(error, ctx)
            return
        # the end is written with the settle (one script), or on its own if the execution ends otherwise
        self._ending = trace.ending("succeeded")
        try:
            self._succeed(result)
        finally:
            self._write_ending()

    def _write_ending(self) -> None:
        """Write the succeeded attempt's end to the timeline now, unless settling did (best effort)."""
        ending, self._ending = self._ending, None
        if ending is not None:
            try:
                self.rt.timeline.apply(ending)
            except Exception as exc:
                logger.log(log_level(exc, logging.WARNING), "run %s node %s: could not record the attempt's "
                           "end: %s", self.run_id, self.token, exc)

    def _queue_wait(self) -> float | None:
        """Seconds this message waited on its queue: from its publish, or its due time when it was
        delayed, until now; None for a message run inline (it never was on a queue)."""
        if self.depth:
            return None
        ready = max(self.msg.sent or 0.0, self.msg.due or 0.0, _eta(self.task))
        return None if ready <= 0 else max(0.0, time.time() - ready)

    def _attempt_failed(self, error: NodeAttemptError, ctx: NodeContext) -> None:
        """Retry with a countdown, fall back (a class node's own `fallback()` first), or fail the
        run (SPEC §3.9)."""
        logger.warning("run %s node %s attempt %s failed: %s", self.run_id, self.node_id, error.attempt, error)
        uses = self.graph.nodes[self.node_id].uses
        self._after_failure(self.msg, error.to_record(), error.attempt, error.retriable, error.prepared,
                            lambda: run_fallback(self.rt.registry.get(uses), error, ctx))

    def _after_failure(self, current: NodeMessage, record: dict[str, Any], attempt: int, retriable: bool = True,
                       prepared: Any = MISSING, own: Callable[[], NodeResult | None] | None = None) -> None:
        """After a failed attempt of any node (a subflow's child run that did not complete too),
        the engine's next step: the next attempt (a delayed message, from `current`, the
        attempt's message), the fallback node, or the run's failure."""
        step = semantics.after_failure(self.graph, self.node_id, attempt, retriable)
        if step.retry:
            carried = prepared if prepared is not MISSING and _is_json(prepared) else current.prepared
            self._requeue(current.but(child=None, child_run=None, attempt=step.attempt, prepared=carried), step.delay)
            return
        result = own() if own is not None else None
        if result is not None:
            self._succeed(result)
        elif step.fallback:
            message = node_message(self.run_id, self.blueprint, step.fallback, self.iteration, current.value,
                                   self.msg.dynamic)
            self._send({message.token: message})
        else:
            self._fail(record)

    def _succeed(self, result: NodeResult, decision: Decision | None = None, recorded: bool = False) -> None:
        """Decide where the execution goes (unless `decision` was made already), record output and
        decision once in one write, deliver the transitions, publish what starts, update the ledger."""
        routed = self._routed(result, decision)
        if routed is None:
            return
        if not recorded:
            try:
                first = self._record(result, routed[2])
            except PermanentError as exc:  # an output no store can hold: no retry can fix it
                self._fail({"nodeId": self.node_id, "message": str(exc), "type": type(exc).__name__})
                return
            except Exception as exc:
                if classify(exc) != "infrastructure":
                    raise
                self._retry_write(result, routed[2], exc)
                return
            if first is not None:  # another copy recorded first: its result and decision count
                result = _result_of(first)
                routed = self._routed(result, _decision_of(first))
                if routed is None:
                    return
        self.graph, addition, decision = routed
        dynamic = self.msg.dynamic
        if addition is not None:
            self.rt.ledger.add_dynamic(self.run_id, self.token, addition.to_dict())
            dynamic = True
        try:
            transitions = semantics.after_decision(self.graph, self.iteration, result.output, decision)
        except Exception as exc:  # a loop past its bound, a decision that does not fit the graph
            if classify(exc) == "infrastructure":
                raise
            self._fail({"nodeId": self.node_id, "message": str(exc), "type": type(exc).__name__})
            return
        starts = dispatch.route(self.graph, self.run_id, transitions, self.rt.coordination)
        messages = [node_message(self.run_id, self.blueprint, s.node_id, s.iteration, s.value, dynamic) for s in starts]
        self._send({message.token: message for message in messages})

    def _routed(self, result: NodeResult, decision: Decision | None
                ) -> tuple[Graph, DynamicAddition | None, Decision] | None:
        """The graph with the result's dynamic nodes and the execution's decision (made now
        against the context unless given); None when that fails the node (a malformed dynamic
        node, an expression that cannot be evaluated)."""
        try:
            graph, addition = semantics.add_dynamic_nodes(self.graph, self.node_id, self.iteration, result,
                                                          self.rt.registry, self.rt.blueprints)
            if decision is None:
                decision = semantics.decide(graph, self.node_id, self.iteration, result, self._lookup)
        except Exception as exc:
            if classify(exc) == "infrastructure":
                raise
            self._fail({"nodeId": self.node_id, "message": str(exc), "type": type(exc).__name__})
            return None
        return graph, addition, decision

    def _send(self, successors: dict[str, NodeMessage]) -> None:
        """Publish the successors' messages (one inline, maybe), pending in the ledger before any
        leaves: a message whose token the ledger does not hold is never run (`_unexpected`)."""
        finished_at = time.time()
        written = {name: message.sent_at(finished_at) for name, message in successors.items()}
        if written:  # an inlined one is on its way right here
            self.rt.ledger.expect(self.run_id, {name: message.to_wire() for name, message in written.items()})
        inline = self._inline_choice(list(written.values()))
        sent = dict(written)
        for message in publish_groups(self.app, self.graph,
                                      self._groups([m for m in written.values() if m is not inline])):
            sent[message.token] = message
        if inline is not None:
            self._write_ending()  # the attempt ended: the timeline says so while the inlined one runs
            NodeExecution(self.task, self.rt, inline, self.depth + 1, own_message=False).handle()
        release = None
        if self._lease is not None:
            held, release = self._lease
            held.stop_renewing()
        settled = self.rt.ledger.settle(self.run_id, self.token,
                                        {name: (written[name].to_wire(), sent[name].to_wire()) for name in written},
                                        finished_at, self.rt.settings.touch_interval, release, self._ending)
        self._settled = True
        self._ending = None
        if self._lease is not None:
            self._lease[0].released = True
        self._completed_or_touched(settled)

    def _record(self, result: NodeResult, decision: Decision) -> RecordedOutput | None:
        """Record output and decision once (also for the node a fallback stands in for); the
        first record wins: returned when another copy wrote it, else None."""
        if not self._marked:
            self.rt.ledger.mark_recording(self.run_id, self.token)
        first = None
        if not self.rt.contexts.record_output(self.run_id, self.node_id, self.iteration, result.output,
                                              result.action, result.dynamic_nodes, decision.to_dict()):
            first = self.rt.contexts.get_output(self.run_id, self.node_id, self.iteration)
        kept = decision if first is None or first.decision is None else Decision.from_dict(first.decision)
        output, action = (result.output, result.action) if first is None else (first.output, first.action)
        for original in self.graph.fallback_chain(self.node_id):  # each node this fallback stood in for
            self.rt.contexts.record_output(self.run_id, original, self.iteration, output, action,
                                           decision=kept.to_dict())
        return first

    def _retry_write(self, result: NodeResult, decision: Decision, exc: Exception) -> None:
        """Recording a finished node's result failed: send the result and its decision on, to be
        recorded later (the node itself is not run again, nor its routing decided again)."""
        writes = self.msg.writes
        countdown = min(MAX_BACKOFF_SECONDS, 2 ** writes)
        logger.log(log_level(exc, logging.WARNING), "run %s node %s finished but its result could not be recorded "
                   "(%s); retrying the write in %s s", self.run_id, self.node_id, exc, countdown)
        done = {"output": result.output, "action": result.action, "dynamicNodes": result.dynamic_nodes,
                "decision": decision.to_dict()}
        self._requeue(self.msg.but(done=done, writes=writes + 1), countdown)

    def _groups(self, messages: list[NodeMessage]) -> list[list[NodeMessage]]:
        """Successor messages packed for sending: up to `fanout_group` ordinary untimed nodes of
        one implementation and queue share a task message; the rest go one by one."""
        size = max(1, self.rt.settings.fanout_group)
        packs: dict[tuple[str, str | None], list[NodeMessage]] = {}
        groups: list[list[NodeMessage]] = []
        for message in messages:
            node = self.graph.nodes[message.node_id]
            if size == 1 or node.uses in RUNNER_BUILTINS or node.config.timeout is not None:
                groups.append([message])
                continue
            pack = packs.setdefault((node.uses, node.config.queue), [])
            pack.append(message)
            if len(pack) == size:
                groups.append(pack)
                packs[(node.uses, node.config.queue)] = []
        groups += [pack for pack in packs.values() if pack]
        return groups

    def _inline_choice(self, messages: list[NodeMessage]) -> NodeMessage | None:
        """A successor to run right here instead of through the queue (a chain hop saved).

        Only an ordinary node this worker implements, routed to the same queue, after a node
        without a timeout, and no deeper than `inline_depth`. This token stays pending until
        the inlined work returns, so a crash in between redelivers this message and the chain
        is picked up again.
        """
        current = self.graph.nodes[self.node_id]
        if self.depth >= self.rt.settings.inline_depth or current.config.timeout is not None:
            return None  # a timed node's task has a soft time limit that must not cover other nodes
        queue = current.config.queue
        for message in messages:
            node = self.graph.nodes[message.node_id]
            if node.uses not in RUNNER_BUILTINS and node.config.queue == queue and node.uses in self.rt.registry:
                return message
        return None

    def _requeue(self, message: NodeMessage, countdown: float) -> None:
        """Run a message again later: a task retry when it is the task's own message, else a
        delayed message of its own (inlined or grouped)."""
        now = time.time()
        message = message.sent_at(now, now + countdown if countdown else None)
        self.rt.ledger.refresh_pending(self.run_id, self.token, message.to_wire())
        if self.own_message:
            raise self.task.retry(kwargs={"msg": message.to_wire()}, countdown=countdown)
        publish(self.app, self.graph, message, countdown=countdown or None)

    def _completed_or_touched(self, settled: Settled) -> None:
        """Complete the run when nothing is pending, else note it is alive (once per touch
        interval, whichever worker settles first)."""
        if settled.remaining == 0:
            if settled.halted:  # failed, cancelled or completed meanwhile: whoever halted it ends it
                return
            known = RunStatusDoc(runId=self.run_id, blueprintId=self.msg.blueprint_id) \
                if settled.parent == "" else None
            complete_run(self.app, self.rt, self.run_id, known)
        elif settled.touch:
            self.rt.statuses.touch(self.run_id)

    def _unexpected(self, entry: NodeMessage) -> str | None:
        """Why the run does not expect this message, or None when it does: a message is a claim,
        the run's record is the judge. The ledger holds a pending entry for every node execution
        the recorded decisions made due (written before its message is sent; without one, the
        message is not due at all); the message must match it (blueprint, version, the child run it
        reports, a resume or wake-up the run gave)."""
        for what, named, expected in (("blueprint", self.msg.blueprint_id, entry.blueprint_id),
                                      ("blueprint version", self.msg.version, entry.version)):
            if named != expected:
                return (f"the message names {what} {named!r} but run {self.run_id} expects "
                        f"{expected!r} for {self.token}")
        child = self.msg.child
        if child is not None and child.get("runId") != entry.child_run:
            return (f"the message reports child run {child.get('runId')!r} but {self.token} of run {self.run_id} "
                    f"waits for {entry.child_run!r}")
        if self.msg.resume is not None and self.msg.resume != entry.resume:
            return f"{self.token} of run {self.run_id} was not resumed with this message's action and output"
        if self.msg.wake and not entry.wake:
            return f"{self.token} of run {self.run_id} is not sleeping: a wake-up message is not expected"
        return None

    def _dead_letter_unexpected(self, reason: str) -> None:
        """A message the run does not expect never runs, fails or advances the run: dead-lettered."""
        logger.warning("dead-lettering node message %s of run %s: %s", self.token, self.run_id, reason)
        dead_letter(self.app, self.task, self.msg, reason)

    def _unknown_run(self) -> None:
        """A message for a run that has no status document is not executed: dead-lettered."""
        reason = f"no run {self.run_id!r}: it has no status document (never started, or its start was taken back)"
        logger.warning("dead-lettering node message %s of run %s: %s", self.token, self.run_id, reason)
        dead_letter(self.app, self.task, self.msg, reason)

    def _fail(self, record: dict[str, Any]) -> None:
        logger.error("run %s failed at node %s: %s", self.run_id, self.node_id, record.get("message"))
        fail_run(self.app, self.rt, self.run_id, [record])

    def _version_mismatch(self, worker_version: str | None) -> None:
        """Leave the message for a worker with the run's version; fail the run if none takes it."""
        reason = (f"blueprint {self.msg.blueprint_id!r} version mismatch: run started on version "
                  f"{self.msg.version!r}, worker {socket.gethostname()} has version {worker_version!r}")
        if str(worker_version).startswith("sha256:") or str(self.msg.version).startswith("sha256:"):
            reason += (" (a blueprint without metadata.version is versioned by its content: it was edited since "
                       "the run started or since this worker loaded it; restart the workers or set a version)")
        mismatches = self.msg.mismatches
        if mismatches < VERSION_MISMATCH_RETRIES and self.node_id in self.graph.nodes:
            logger.error("%s; leaving it for another worker", reason)
            self._requeue(self.msg.but(mismatches=mismatches + 1), 5)
            return
        self._fail({"nodeId": self.node_id, "type": "VersionMismatch", "message": reason})

    # -- built-ins --------------------------------------------------------------------------

    def _builtin(self, uses: str, node_input: Any) -> None:
        node = self.graph.nodes[self.node_id]
        if uses == "sleep":
            try:
                seconds = sleep_seconds(node.params, self.node_id)
            except ValueError as exc:
                self._fail({"nodeId": self.node_id, "message": str(exc), "type": "ValueError"})
                return
            wake_at = time.time() + seconds
            message = self.msg.but(wake=True, wake_at=wake_at, value=node_input).sent_at(time.time(), wake_at)
            self.rt.ledger.update_pending(self.run_id, self.token, message.to_wire())
            self.rt.statuses.record_sleep(self.run_id, self.token, wake_at)
            publish(self.app, self.graph, message, countdown=seconds)
        elif uses in AWAITING_BUILTINS:
            if uses == "webhook":
                register_webhook(self.rt, self.msg)
            mark_awaiting(self.app, self.rt, self.run_id, self.token)
        else:
            self._start_child(node_input)

    def _start_child(self, node_input: Any) -> None:
        """Start the subflow's child run (idempotently: its id derives from this node execution
        and attempt). A child that cannot start because a service did not answer is started
        again when the message is retried; an invalid one fails the node."""
        params = self.graph.nodes[self.node_id].params
        attempt = self.msg.attempt
        child_id = child_run_id(self.run_id, self.node_id, self.iteration, attempt)
        depth = int((self.rt.statuses.get(self.run_id) or {}).get("depth") or 0) + 1
        if depth > self.rt.settings.subflow_depth:
            self._fail({"nodeId": self.node_id, "type": "SubflowDepthError", "message": subflow_depth_message(
                self.node_id, str(params.get("blueprintId")), self.rt.settings.subflow_depth)})
            return
        initial, to_starts = subflow_initial_context(params, node_input, self._lookup)
        self.rt.ledger.update_pending(self.run_id, self.token, self.msg.but(child_run=child_id).to_wire())
        if self.rt.statuses.get(child_id) is not None:
            return
        self.rt.timeline.begin(self.run_id, self.token, "subflow", attempt,  # the attempt lasts as long as its child
                               self.task.request.hostname or socket.gethostname())
        try:
            start_run(self.app, self.rt, str(params.get("blueprintId")), initial, run_id=child_id,
                      start_input=node_input if to_starts else None,
                      parent={"parentRunId": self.run_id, "parentNodeId": self.node_id,
                              "parentIteration": self.iteration, "depth": depth})
        except (RunError, ValueError) as exc:  # unknown or invalid child blueprint, values JSON cannot carry
            if classify(exc) == "infrastructure":
                raise  # a store or the broker did not answer: nothing of the child started; retried with back-off
            self._end_child_attempt("failed")
            self._fail({"nodeId": self.node_id, "type": "SubflowError", "message": str(exc)})

    def _child_ended(self, child: dict[str, Any]) -> None:
        """The child run finished: complete this subflow node, or count a failed attempt of it (the
        news of a child of an earlier attempt never gets here: `_unexpected` dead-letters it)."""
        child_id = str(child.get("runId"))
        current = self.entry
        doc = self.rt.statuses.get(child_id) or {}
        status = doc.get("status")
        result = doc.get("result") or {}
        if status != "completed":
            attempt = current.attempt
            record = {"nodeId": self.node_id, "type": "SubflowError", "attempt": attempt,
                      "message": subflow_failure(child_id, status, doc.get("errors") or [])}
            logger.warning("run %s node %s attempt %s failed: %s", self.run_id, self.node_id, attempt,
                           record["message"])
            step = semantics.after_failure(self.graph, self.node_id, attempt)
            self._end_child_attempt("retrying" if step.retry else "failed", step.delay if step.retry else None)
            self._after_failure(current, record, attempt)
            return
        self._end_child_attempt("succeeded")
        context = dict(result.get("context") or {})
        child_graph = Graph(self.rt.blueprints[str(doc.get("blueprintId"))])
        output, copies = subflow_output(self.graph.nodes[self.node_id].params, child_graph, context)
        for key, value in copies.items():
            self.rt.contexts.set(self.run_id, key, value)
        self._succeed(NodeResult(output=output))

    def _end_child_attempt(self, state: str, retry_in: float | None = None) -> None:
        """Record in the timeline how the attempt whose child just ended ended (best effort, once:
        a redelivered message finds it ended already)."""
        try:
            entry = self.rt.timeline.entries(self.run_id).get(self.token)
        except Exception as exc:
            logger.log(log_level(exc, logging.WARNING), "run %s node %s: could not read the attempt's timeline "
                       "entry: %s", self.run_id, self.token, exc)
            return
        if entry is not None and entry.get("state") == "running":
            _end_trace(Attempt(self.rt.timeline, self.run_id, self.token, entry), state, retry_in)
