"""Workflow semantics as pure functions: the one place that decides what a run does next.

The local runner and the Celery bridge both call these; they differ only in how they move
work and where state lives. Nothing here does I/O: context values come in through a
`Lookup` callable (returning `MISSING` for absent keys), so a caller can load only the keys
an expression reads.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from flowcraft_celery.engine.decisions import Decision
from flowcraft_celery.engine.registry import NodeResult
from flowcraft_celery.errors import FlowcraftError
from flowcraft_celery.expressions.evaluator import UNDEFINED, compile_expression, truthy
from flowcraft_celery.model.blueprint import Blueprint, EdgeDefinition, NodeDefinition
from flowcraft_celery.model.graph import LOOP_CONTROLLER, DynamicAddition, Graph
from flowcraft_celery.model.iterations import IterationOverflowError
from flowcraft_celery.model.validation import validate_or_raise
from flowcraft_celery.stores.base import MISSING, JoinState

Lookup = Callable[[str], Any]


def output_key(node_id: str) -> str:
    """The context key holding a node's latest output."""
    return f"_outputs.{node_id}"


class ContextScope(Mapping[str, Any]):
    """A read-only mapping over a lookup, so expressions read only the keys they name."""

    def __init__(self, lookup: Lookup, extra: Mapping[str, Any] | None = None) -> None:
        self._lookup = lookup
        self._extra = dict(extra or {})

    def __getitem__(self, key: str) -> Any:
        if key in self._extra:
            return self._extra[key]
        value = self._lookup(key)
        if value is MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return key in self._extra or self._lookup(key) is not MISSING

    def __iter__(self) -> Iterator[str]:
        return iter(self._extra)

    def __len__(self) -> int:
        return len(self._extra)


def _condition_holds(edge: EdgeDefinition, result: NodeResult, lookup: Lookup) -> bool:
    """An edge's condition, against the context's keys plus `result` (§3.3)."""
    if edge.condition is None:
        return True
    scope = ContextScope(lookup, {"result": result.to_dict()})
    return truthy(compile_expression(edge.condition).evaluate(scope))


def handed_over(edge: EdgeDefinition, output: Any, lookup: Lookup) -> Any:
    """The value an edge hands its target: the transform's value, else the source's output."""
    if edge.transform is None:
        return output
    scope = {"input": output, "context": ContextScope(lookup)}
    return json_value(compile_expression(edge.transform).evaluate(scope))


def json_value(value: Any) -> Any:
    """An expression's value as JSON stores it: undefined, NaN and infinities become null (as
    JavaScript's JSON.stringify does), inside lists and objects too."""
    if value is UNDEFINED or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, list):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    return value


def candidate_edges(graph: Graph, node_id: str, iteration: int = 0) -> list[EdgeDefinition]:
    """A node's candidate out-edges (§3.2): its own, plus those of each node it stands in for as a
    fallback (down a chain). A recorded decision names edges by their position in this list."""
    candidates = graph.out_edges_at(node_id, iteration)
    for original in graph.fallback_chain(node_id):  # a fallback drives the edges of each node it stands in for
        candidates += graph.out_edges_at(original, iteration)
    return candidates


def choose_edges(
    graph: Graph, node_id: str, result: NodeResult, lookup: Lookup, iteration: int = 0
) -> tuple[list[EdgeDefinition], list[EdgeDefinition]]:
    """Split candidate out-edges into taken and not taken (§3.2)."""
    candidates = candidate_edges(graph, node_id, iteration)
    taken: list[EdgeDefinition] = []
    if graph.nodes[node_id].uses == LOOP_CONTROLLER:
        taken = [e for e in candidates if e.condition is not None and _condition_holds(e, result, lookup)]
    if not taken and result.action is not None:
        taken = [e for e in candidates if e.action == result.action and _condition_holds(e, result, lookup)]
    if not taken:
        taken = [e for e in candidates if e.action is None and _condition_holds(e, result, lookup)]
    chosen = {id(e) for e in taken}
    return taken, [e for e in candidates if id(e) not in chosen]


def decide(graph: Graph, node_id: str, iteration: int, result: NodeResult, lookup: Lookup) -> Decision:
    """The routing decision of a node execution that just completed (§3.2 "decided once"): the
    candidate edges taken and what their transforms hand over, against the context as it is now,
    with the node's own output (recorded in the same write as the decision) visible under its id."""
    scope = _with_own_output(graph, node_id, result.output, lookup)
    candidates = candidate_edges(graph, node_id, iteration)
    taken, _ = choose_edges(graph, node_id, result, scope, iteration)
    chosen = {id(e) for e in taken}
    positions = tuple(i for i, e in enumerate(candidates) if id(e) in chosen)
    values = {i: handed_over(candidates[i], result.output, scope) for i in positions
              if candidates[i].transform is not None}
    return Decision(node_id, positions, values)


def _with_own_output(graph: Graph, node_id: str, output: Any, lookup: Lookup) -> Lookup:
    """A lookup that shows `output` as the node's (and, for a fallback, its originals') output."""
    names = {node_id, *graph.fallback_chain(node_id)}
    own = {key for name in names for key in (output_key(name), name)}

    def scoped(key: str) -> Any:
        return output if key in own else lookup(key)

    return scoped


def resume_actions(graph: Graph, node_id: str, iteration: int = 0) -> list[str] | None:
    """The actions a resume of an awaiting node may give, or None when any action is fine
    (the node has edges without an action, which an unmatched action falls back to, or none)."""
    edges = graph.out_edges_at(node_id, iteration)
    if not edges or any(e.action is None for e in edges):
        return None
    return sorted({e.action for e in edges if e.action is not None})


def check_resume_action(graph: Graph, node_id: str, action: str | None, iteration: int = 0) -> None:
    """Refuse a resume whose action no edge of the awaiting node takes, naming the ones that do."""
    actions = resume_actions(graph, node_id, iteration)
    if actions is not None and action not in actions:
        raise ValueError(f"action {action!r} is taken by no edge of awaiting node {node_id!r}; "
                         f"its edges take: {', '.join(repr(a) for a in actions)}")


class LoopBoundError(FlowcraftError, RuntimeError):
    """A cycle ran more iterations than the blueprint's `metadata.maxIterations` allows."""


def target_iteration(graph: Graph, edge: EdgeDefinition, iteration: int, origin: str | None = None) -> int:
    """Iteration of an edge's target, from the iteration of `origin`'s execution (default the
    edge's source; a fallback runs in the iteration of the node it stands in for). The target
    keeps the passes of the loops it shares with the origin, starts at pass 0 in loops it
    enters, drops the loops it leaves, and a back edge starts its loop's next pass. With one
    loop: +1 across the back edge, the loop's nodes keep the iteration, nodes outside every
    loop run in iteration 0. LoopBoundError past the room the nesting leaves."""
    source = edge.source if origin is None else origin
    chain_from, chain_to = graph.loops_of(source), graph.loops_of(edge.target)
    before = graph.passes(source, iteration)
    shared = 0
    while shared < min(len(chain_from), len(chain_to)) and chain_from[shared] == chain_to[shared]:
        shared += 1
    passes = [*before[:shared], *([0] * (len(chain_to) - shared))]
    if graph.is_back_edge(edge) and edge.target in chain_to:
        passes[chain_to.index(edge.target)] += 1
    try:
        return graph.iteration_at(passes)
    except IterationOverflowError as exc:
        raise LoopBoundError(f"node {edge.target!r}: {exc}") from exc


@dataclass(frozen=True)
class Transition:
    """One edge's effect on its target: an arrival with a value, or a skip."""

    edge: EdgeDefinition
    iteration: int
    value: Any = None
    skipped: bool = False
    back: bool = False

    @property
    def target(self) -> str:
        """The node the transition arrives at."""
        return self.edge.target

    @property
    def predecessor(self) -> str:
        """Who arrives: the edge's source (the original node when a fallback stood in)."""
        return self.edge.source


@dataclass(frozen=True)
class ExitGate:
    """A loop's exit settlement point, one per pass of its head (`head` at `iteration`).

    With `edge`: an exit edge of the loop that its source did not take (or could not take,
    being skipped) in the pass before the head's pass `iteration`. That skip is final only if
    that pass was the loop's last one. With no `edge`: the head's execution at `iteration`
    left the loop (it broke, or was skipped), so the pass before it was the last one.
    `dispatch.route` meets the two in the coordination store: whichever comes second settles
    the edge (`settle_exit`), so an exit edge is skipped once its loop is left and its source's
    execution in the last pass has decided, never before."""

    head: str
    iteration: int
    edge: EdgeDefinition | None = None


#: What an execution's decision, or a skip, causes: arrivals and skips, and exit gates.
Step = Transition | ExitGate


class DecisionMismatchError(FlowcraftError, RuntimeError):
    """A recorded decision names edges its node does not have in this graph (the blueprint changed)."""


def after_decision(graph: Graph, iteration: int, output: Any, decision: Decision) -> list[Step]:
    """Arrivals and skips caused by a node execution that completed with `decision` (§3.2,
    §3.5); nothing is evaluated here. LoopBoundError past `metadata.maxIterations`."""
    node_id = decision.node
    candidates = candidate_edges(graph, node_id, iteration)
    if any(i < 0 or i >= len(candidates) for i in decision.taken):
        raise DecisionMismatchError(f"the recorded decision of node {node_id!r} names edges {list(decision.taken)} "
                                    f"but the node has {len(candidates)} in this run's graph")
    taken = [candidates[i] for i in decision.taken]
    not_taken = [e for i, e in enumerate(candidates) if i not in decision.taken]
    origin = graph.fallback_root(node_id)  # a fallback runs in its original's iteration
    arrivals = [
        Transition(candidates[i], target_iteration(graph, candidates[i], iteration, origin),
                   decision.values.get(i, output), back=graph.is_back_edge(candidates[i]))
        for i in decision.taken
    ]
    bound = graph.max_iterations
    for transition in arrivals:
        passes = graph.passes(transition.target, transition.iteration) if transition.back else ()
        if bound is not None and passes and passes[-1] >= bound:
            raise LoopBoundError(f"node {transition.target!r} would start iteration {passes[-1] + 1}, "
                                 f"over the blueprint's metadata.maxIterations of {bound}")
    left = _left_loops(graph, origin, taken)
    out: list[Step] = list(arrivals)
    out += _skips(graph, iteration, not_taken, left, taken, origin)
    out += _back_skips(graph, iteration, not_taken, origin, left, taken)
    out += _unused_fallback_skips(graph, node_id, iteration)
    return out


def _unused_fallback_skips(graph: Graph, node_id: str, iteration: int) -> list[Step]:
    """A node that succeeded (or was skipped) never needs its `config.fallback` in this
    iteration, nor that node's fallback, down the chain: their own out-edges are dead paths
    (down to a fallback some other node names too, which may still need it)."""
    out: list[Step] = []
    origin = graph.fallback_root(node_id)
    for fallback in graph.fallbacks_below(node_id):
        if fallback not in graph.nodes or fallback in graph.shared_fallbacks:
            break
        out += _skips(graph, iteration, graph.out_edges_at(fallback, iteration), [], origin=origin)
    return out


def _back_skips(graph: Graph, iteration: int, not_taken: list[EdgeDefinition], origin: str,
                left: list[str], taken: Iterable[EdgeDefinition] = ()) -> list[Transition]:
    """Back edges that `origin`'s execution (it ran, or was skipped in a pass that happened) did
    not take, skipped into their loop head's next pass (§3.8), once the skip is final: `origin`
    cannot run again in the head's pass. When no back edge reaches the head's next pass, that
    pass is skipped and the loop is left (the head opens its exit gate, see `ExitGate`).

    - A node directly in the head's loop runs once per pass: its skip is final at once.
    - A node inside a loop nested in the head's body runs again in the head's pass while the
      inner loop goes on. Its skip waits until the inner loop's own head ends it (breaks, or
      its next pass is skipped): then the back edges into the loop around it from the nodes
      of its cycle (those that can come back to its head) are skipped. A node of its body off
      that cycle may still be running then; its back edge is never skipped early.
    - A loop head in `left` whose pass does not happen skips nothing into its own next pass.
    """
    out: list[Transition] = []
    done: set[int] = {id(e) for e in taken}

    def skip(edge: EdgeDefinition) -> None:
        if id(edge) in done:
            return
        done.add(id(edge))
        with contextlib.suppress(LoopBoundError):  # a pass that could not start anyway
            out.append(Transition(edge, target_iteration(graph, edge, iteration, origin), skipped=True, back=True))

    chain = graph.loops_of(origin)
    for edge in not_taken:
        if graph.is_back_edge(edge) and chain and edge.target == chain[-1] and not (
                edge.target == origin and origin in left):
            skip(edge)
    if origin in left and len(chain) > 1:  # an inner loop's head ends it in this pass of the loop around it
        for edge in graph.in_edges.get(chain[-2], []):
            if graph.is_back_edge(edge) and graph.returns_to(edge.source, origin):
                skip(edge)
    return out


def after_skip(graph: Graph, node_id: str, iteration: int) -> list[Step]:
    """Skips caused by a node that will not run in this iteration (dead-path elimination).

    A loop head is skipped when its loop is not entered, or when no back edge reached its next
    pass: the whole loop is left, and its body is not skipped into (that pass never happens); it
    opens its exit gate (`ExitGate`). A node skipped in a pass that did happen skips its back
    edges into that pass's successor (§3.8), and its exit edges go to the gate of that successor
    (a skip that is final only if that successor does not run)."""
    edges = graph.out_edges_at(node_id, iteration)
    left = [node_id] if node_id in graph.loop_heads else []
    out = _skips(graph, iteration, edges, left, origin=node_id)
    out += _back_skips(graph, iteration, edges, node_id, left)
    return out + _unused_fallback_skips(graph, node_id, iteration)


def _left_loops(graph: Graph, node_id: str, taken: list[EdgeDefinition]) -> list[str]:
    """Heads of the loops this node ends: the head itself, or a node of the loop's cycle taking
    an exit, when none of the edges it took can come back to the head. An off-cycle node (a
    side branch) never ends a loop: the loop's own cycle decides when it is left. Only a head
    leaving its own loop acts on it (`_skips`, `_back_skips`): a cycle node taking an exit ends
    its pass, and the loop is left when the head's next pass is skipped, as no back edge came."""
    left: list[str] = []
    for head in graph.loops_of(node_id):
        if not graph.returns_to(node_id, head):
            continue
        if any(graph.returns_to(e.target, head) for e in taken):
            continue
        if node_id == head or any(head in graph.loops_left_by(e) for e in taken):
            left.append(head)
    return left


def _skips(graph: Graph, iteration: int, edges: Iterable[EdgeDefinition], left: list[str],
           taken: Iterable[EdgeDefinition] = (), origin: str | None = None) -> list[Step]:
    """Skips to propagate for `origin`'s execution at `iteration` (it finished, or was skipped),
    over its `edges` not taken. Never along a back edge (see `_back_skips`); never from a head
    that leaves its loop into its own body (that pass does not happen, so nothing in it, back
    edges included, is settled). An exit edge (out of a loop) is settled through the loop's
    exit gate (`ExitGate`, `settle_exit`): its skip is final only once the loop is left and the
    source's execution in the last pass has decided. When `origin` is a head leaving its loop
    (in `left`), it opens its gate; when no pass happened at all (it left at pass 0), every
    exit of the loop is settled at once, as no node of its body ran."""
    out: list[Step] = []
    done = {id(e) for e in taken}
    settled: set[tuple[str, str]] = {(e.source, e.target) for e in taken}
    leaving = origin is not None and origin in left and origin in graph.loop_heads
    for edge in edges:
        if id(edge) in done or graph.is_back_edge(edge):
            continue
        done.add(id(edge))
        if graph.is_exit_edge(edge):
            if (edge.source, edge.target) in settled:
                continue  # one settlement per predecessor and target: a join is told once
            settled.add((edge.source, edge.target))
            out += _exit_not_taken(graph, edge, iteration, leaving)
            continue
        if origin in left and graph.in_region(edge.target, origin):  # a pass of its loop that does not happen
            continue
        if (edge.source, edge.target) in settled:  # another edge between the two was taken, or skipped already
            continue
        settled.add((edge.source, edge.target))
        out.append(Transition(edge, target_iteration(graph, edge, iteration, origin), skipped=True))
    if leaving and origin is not None:
        out.append(ExitGate(origin, iteration))
        if graph.passes(origin, iteration)[-1] == 0:  # no pass happened: nothing in the body can take an exit
            for edge in graph.exit_edges(origin):
                if id(edge) in done or (edge.source, edge.target) in settled or graph.is_back_edge(edge):
                    continue
                settled.add((edge.source, edge.target))
                out += settle_exit(graph, edge, origin, iteration)
    return out


def exit_chain(graph: Graph, edge: EdgeDefinition) -> list[str]:
    """Heads of the loops an exit edge leaves, innermost first."""
    leaves = graph.loops_left_by(edge)
    return [h for h in reversed(graph.loops_of(edge.source)) if h in leaves]


def next_pass(graph: Graph, node_id: str, iteration: int, head: str) -> int | None:
    """The iteration of `head`'s execution that follows the pass of `head`'s loop that
    `node_id`'s execution at `iteration` belongs to (None past the iteration limits)."""
    chain = graph.loops_of(node_id)
    passes = list(graph.passes(node_id, iteration)[:chain.index(head) + 1])
    passes[-1] += 1
    try:
        return graph.iteration_at(passes)
    except IterationOverflowError:
        return None


def _exit_not_taken(graph: Graph, edge: EdgeDefinition, iteration: int, leaving: bool) -> list[Step]:
    """An exit edge its source's execution at `iteration` did not take. A head's own exit is
    final when that execution leaves the loop (while it continues, its next pass decides
    again); any other source's goes to the gate of the next pass of the innermost loop it
    leaves, final only if that pass does not happen."""
    chain = exit_chain(graph, edge)
    if edge.source == chain[0]:
        return settle_exit(graph, edge, edge.source, iteration) if leaving else []
    at = next_pass(graph, edge.source, iteration, chain[0])
    if at is None:  # no next pass can exist: this pass was the last
        last = graph.iteration_at(graph.passes(edge.source, iteration)[:len(graph.loops_of(chain[0]))])
        return settle_exit(graph, edge, chain[0], last)
    return [ExitGate(chain[0], at, edge)]


def settle_exit(graph: Graph, edge: EdgeDefinition, head: str, iteration: int) -> list[Step]:
    """An exit edge not taken in the last pass of `head`'s loop, which `head`'s execution at
    `iteration` left: skipped into its target for good, unless it leaves a loop around that
    one too; then it goes to that loop's gate, final only if that pass was its last too."""
    chain = exit_chain(graph, edge)
    position = chain.index(head)
    if position + 1 < len(chain):
        outer = chain[position + 1]
        at = next_pass(graph, head, iteration, outer)
        if at is not None:
            return [ExitGate(outer, at, edge)]
        last = graph.iteration_at(graph.passes(head, iteration)[:len(graph.loops_of(outer))])
        return settle_exit(graph, edge, outer, last)
    with contextlib.suppress(LoopBoundError):
        return [Transition(edge, target_iteration(graph, edge, iteration, head), skipped=True)]
    return []


JoinOutcome = Literal["run", "wait", "skip"]


@dataclass(frozen=True)
class JoinDecision:
    """Whether a node's arrivals so far let it run, keep waiting, or mark it skipped."""

    outcome: JoinOutcome
    value: Any = None


#: Built-ins that always receive `{predecessor: value}`, even from a single predecessor.
GATHERING = frozenset({"batch-gather"})


def join_decision(
    graph: Graph, node_id: str, iteration: int, state: JoinState, arriving: str | None, back: bool = False
) -> JoinDecision:
    """Decide a node's readiness from its arrivals (§3.4, §3.5).

    One predecessor: run on its arrival. `any`: run on an arrival (`arriving` is who just
    came; the caller's once-only claim keeps the first). `all`: run once every predecessor
    arrived or was skipped, with `{predecessor: value}` of those that arrived. All skipped: skip.
    A `batch-gather` always gets `{predecessor: value}`.
    """
    preds = graph.join_predecessors(node_id, iteration, back)
    arrived = {p: state.arrived[p] for p in preds if p in state.arrived}
    skipped = [p for p in preds if p in state.skipped and p not in arrived]
    gathering = graph.nodes[node_id].uses in GATHERING
    if len(preds) <= 1:
        if arrived:
            return JoinDecision("run", arrived if gathering else next(iter(arrived.values())))
        return JoinDecision("skip") if skipped else JoinDecision("wait")
    if graph.nodes[node_id].config.join == "any":
        if arriving is not None and arriving in arrived:
            return JoinDecision("run", {arriving: arrived[arriving]} if gathering else arrived[arriving])
        if not arrived and len(skipped) == len(preds):
            return JoinDecision("skip")
        return JoinDecision("wait")
    if len(arrived) + len(skipped) < len(preds):
        return JoinDecision("wait")
    if not arrived:
        return JoinDecision("skip")
    return JoinDecision("run", arrived)


def resolve_input(graph: Graph, node: NodeDefinition, handed: Any, lookup: Lookup, iteration: int = 0) -> Any:
    """A node's input: a dynamic node's fixed input of this iteration, else its `inputs`
    mapping if any, else what the triggering edge handed over."""
    fixed, value = graph.fixed_input(node.id, iteration)
    if fixed:
        return value
    if node.inputs is None:
        return handed
    if isinstance(node.inputs, str):
        value = _resolve_ref(graph, node.inputs, lookup)
        return None if value is MISSING else value
    resolved = {k: _resolve_ref(graph, ref, lookup) for k, ref in node.inputs.items()}
    return {k: v for k, v in resolved.items() if v is not MISSING}


def _resolve_ref(graph: Graph, ref: str, lookup: Lookup) -> Any:
    """One `inputs` reference: `_key`, `nodeId`, `nodeId.path.to.field`, or a context key."""
    if ref.startswith("_"):
        return lookup(ref)
    head, _, path = ref.partition(".")
    if head in graph.nodes:
        value = lookup(output_key(head))
        for part in path.split(".") if path else []:
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return MISSING
        return value
    return lookup(ref)


def add_dynamic_nodes(graph: Graph, node_id: str, iteration: int, result: NodeResult,
                      registry: Container[str] | None, blueprints: Mapping[str, Any] | None
                      ) -> tuple[Graph, DynamicAddition | None]:
    """The graph with a result's dynamic nodes added for this iteration (§3.7), and the addition;
    a malformed node, an unknown implementation or a taken id raises (the node then fails)."""
    if not result.dynamic_nodes:
        return graph, None
    addition = DynamicAddition.from_result(node_id, result.dynamic_nodes, result.output, iteration)
    validate_or_raise(Blueprint(graph.blueprint.id, list(addition.nodes), []), registry, blueprints)
    return graph.extend([addition]), addition


def loop_controller_result(condition: str, lookup: Lookup) -> NodeResult:
    """A loop-controller's result: `continue` while its condition holds, else `break` (§3.8)."""
    if truthy(compile_expression(condition).evaluate(ContextScope(lookup))):
        return NodeResult(output=None, action="continue")
    return NodeResult(output=None, action="break")


@dataclass(frozen=True)
class AfterFailure:
    """What a failed attempt of a node leads to (§3.9): another attempt after `delay` seconds,
    else its fallback node in its place, else (neither) the node's failure. A class node's own
    `fallback()` comes before the fallback node; the runner calls it, as only it can."""

    retry: bool
    attempt: int
    delay: float = 0.0
    fallback: str | None = None


def after_failure(graph: Graph, node_id: str, attempt: int, retriable: bool = True) -> AfterFailure:
    """The step after attempt number `attempt` of a node failed, for every kind of node: an
    ordinary node's attempt, a subflow's child run that did not complete. `config.maxRetries`
    is the number of attempts; a failure that is not retriable (outside a class node's `exec`)
    goes straight to the fallback."""
    config = graph.nodes[node_id].config
    if retriable and attempt < config.attempts:
        return AfterFailure(retry=True, attempt=attempt + 1, delay=config.delay_seconds)
    fallback = config.fallback if config.fallback in graph.nodes else None
    return AfterFailure(retry=False, attempt=attempt, fallback=fallback)
