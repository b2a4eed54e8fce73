"""Routing a node's transitions through the coordination store: which targets start now.

Shared by the local runner and the Celery bridge. Each arrival or skip is recorded once per
(run, target, iteration); the engine decides readiness; a once-only claim (keyed by the
arriving predecessor, so a redelivery of the same arrival re-claims) makes a join start its
target once. Skips cascade through nodes that become unreachable. A loop's exit gates
(`semantics.ExitGate`) meet in the same store: an exit edge skipped in some pass and the
head's leaving of the loop after that pass, whichever comes second, settle the exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flowcraft_celery.engine import semantics
from flowcraft_celery.model.blueprint import EdgeDefinition
from flowcraft_celery.model.graph import Graph
from flowcraft_celery.stores.base import CoordinationStore, JoinState


@dataclass(frozen=True)
class Start:
    """A target to execute: node, iteration and the value handed to it."""

    node_id: str
    iteration: int
    value: Any


@dataclass(frozen=True)
class StalledJoin:
    """A join that some predecessors reached but that never fired: the others neither arrived
    nor were skipped, and nothing is left that could bring them."""

    node_id: str
    iteration: int
    arrived: tuple[str, ...]
    missing: tuple[str, ...]

    def to_error(self, graph: Graph) -> dict[str, Any]:
        """The run's error record for it (the run ends `stalled`, never `completed`)."""
        where = f"node {self.node_id!r} (iteration {graph.iteration_label(self.node_id, self.iteration)}) never ran"
        came = ", ".join(map(repr, self.arrived))
        if self.missing:
            why = (f"{came} reached it but {', '.join(map(repr, self.missing))} neither arrived nor was skipped, "
                   "and no work is left that could bring them")
        else:
            why = f"{came} reached it, yet the coordination store did not let it fire (its arrivals were lost)"
        return {"nodeId": self.node_id, "type": "StalledJoin", "iteration": self.iteration,
                "message": f"{where}: {why}"}


class JoinWatch:
    """The engine's own account of the joins `route` delivered to: which were reached, which fired.

    A run may report `completed` only when no join was reached without firing (`stalled`)."""

    def __init__(self) -> None:
        self._reached: dict[tuple[str, int], tuple[bool, dict[str, None]]] = {}
        self._fired: set[tuple[str, int]] = set()

    def arrive(self, target: str, iteration: int, predecessor: str, back: bool) -> None:
        """A predecessor arrived at (or was skipped into) a join."""
        was_back, preds = self._reached.setdefault((target, iteration), (back, {}))
        preds[predecessor] = None
        self._reached[(target, iteration)] = (was_back or back, preds)

    def fire(self, target: str, iteration: int) -> None:
        """The join ran or was skipped: it is settled."""
        self._fired.add((target, iteration))

    def fired(self, target: str, iteration: int) -> bool:
        """Whether the join ran or was skipped already."""
        return (target, iteration) in self._fired

    def stalled(self, graph: Graph) -> list[StalledJoin]:
        """Joins reached but never settled, in the order they were first reached."""
        out: list[StalledJoin] = []
        for (target, iteration), (back, preds) in self._reached.items():
            if (target, iteration) in self._fired:
                continue
            expected = graph.join_predecessors(target, iteration, back)
            missing = tuple(p for p in expected if p not in preds)
            out.append(StalledJoin(target, iteration, tuple(preds), missing))
        return out


def join_scope(run_id: str, target: str, iteration: int) -> str:
    """The coordination scope of one join: arrivals and the claim at (target, iteration) of a run."""
    return f"{run_id}:{target}@{iteration}"


def join_scopes(graph: Graph, run_id: str, tokens: Iterable[str]) -> list[str]:
    """Every scope `route` may have used in a run of `graph` whose node executions are `tokens`
    (`node@iteration`): the joins (targets with several predecessors to wait for) that the
    executions' edges reach, directly or through the skips they cascade into."""
    todo: list[tuple[str, int]] = []
    for name in tokens:
        node_id, _, number = name.rpartition("@")
        if node_id in graph.nodes and number.isdigit():
            todo.append((node_id, int(number)))
    seen = set(todo)
    scopes: dict[str, None] = {}
    while todo:
        node_id, iteration = todo.pop()
        edges = graph.out_edges_at(node_id, iteration)
        for fallback in graph.fallbacks_below(node_id):  # their edges are taken, or skipped when unused
            if fallback in graph.nodes:
                edges = edges + graph.out_edges_at(fallback, iteration)
        if node_id in graph.loop_heads:
            edges = edges + graph.exit_edges(node_id)
        for head, at in _gates(graph, node_id, iteration, edges):
            scopes[gate_scope(run_id, head, at)] = None
        for edge in edges:
            try:
                at = semantics.target_iteration(graph, edge, iteration, node_id)
            except semantics.LoopBoundError:
                continue
            if len(graph.join_predecessors(edge.target, at, graph.is_back_edge(edge))) > 1 or \
                    len(graph.join_predecessors(edge.target, at)) > 1:
                scopes[join_scope(run_id, edge.target, at)] = None
            if not graph.is_back_edge(edge) and (edge.target, at) not in seen:
                seen.add((edge.target, at))
                todo.append((edge.target, at))
    return list(scopes)


def gate_scope(run_id: str, head: str, iteration: int) -> str:
    """The coordination scope of a loop's exit gate at one pass of its head (`semantics.ExitGate`)."""
    return f"{run_id}:exits:{head}@{iteration}"


#: The gate entry of a head's execution that left its loop.
LEFT = "!left"


def edge_token(graph: Graph, edge: EdgeDefinition) -> str:
    """An exit edge's name in a gate: its position among its source's edges, then its source."""
    position = next((i for i, e in enumerate(graph.out_edges.get(edge.source, [])) if e is edge), None)
    if position is None:
        position = next((i for i, e in enumerate(graph.out_edges.get(edge.source, [])) if e == edge), 0)
    return f"{position}#{edge.source}"


def _edge_of(graph: Graph, token: str) -> EdgeDefinition | None:
    """Inverse of `edge_token`."""
    position, _, source = token.partition("#")
    edges = graph.out_edges.get(source, [])
    return edges[int(position)] if position.isdigit() and int(position) < len(edges) else None


def _through_gate(graph: Graph, run_id: str, gate: semantics.ExitGate,
                  coordination: CoordinationStore) -> list[semantics.Step]:
    """Meet a loop's exit skips and its leaving at one pass of its head: whichever arrives
    second settles the exit edges (the store makes exactly one of them see the other)."""
    scope = gate_scope(run_id, gate.head, gate.iteration)
    if gate.edge is None:
        state = coordination.arrive(scope, LEFT, None, False)
        edges = [e for e in (_edge_of(graph, t) for t in sorted(state.skipped)) if e is not None]
    else:
        state = coordination.arrive(scope, edge_token(graph, gate.edge), None, True)
        edges = [gate.edge] if LEFT in state.arrived else []
    out: list[semantics.Step] = []
    for edge in edges:
        out += semantics.settle_exit(graph, edge, gate.head, gate.iteration)
    return out


def _gates(graph: Graph, node_id: str, iteration: int, edges: list[EdgeDefinition]) -> list[tuple[str, int]]:
    """The exit gates (head, iteration) a node execution (or its skip) may use: its own head's
    gate when it is a head, the gate of the next pass its back edges start, and for each exit
    edge the gate of each loop it leaves, innermost first."""
    out: list[tuple[str, int]] = []
    if node_id in graph.loop_heads:
        out.append((node_id, iteration))
    for edge in edges:
        if graph.is_back_edge(edge):
            with contextlib.suppress(semantics.LoopBoundError):
                out.append((edge.target, semantics.target_iteration(graph, edge, iteration, node_id)))
            continue
        if not graph.is_exit_edge(edge):
            continue
        chain = semantics.exit_chain(graph, edge)
        at: int | None
        if edge.source == node_id:  # its own exit: its head settles it, or the next pass's gate
            at = iteration if node_id == chain[0] else semantics.next_pass(graph, node_id, iteration, chain[0])
            level = 0
        elif node_id in chain:  # an exit of its loop, settled at its own gate when it left at pass 0
            at, level = iteration, chain.index(node_id)
        else:
            continue
        if at is None:
            continue
        out.append((chain[level], at))
        for inner, outer in zip(chain[level:], chain[level + 1:], strict=False):
            nxt = semantics.next_pass(graph, inner, at, outer)
            if nxt is None:
                break
            at = nxt
            out.append((outer, at))
    return out


def route(
    graph: Graph,
    run_id: str,
    transitions: list[semantics.Step],
    coordination: CoordinationStore,
    on_skip: Callable[[str, int], None] | None = None,
    watch: JoinWatch | None = None,
) -> list[Start]:
    """Deliver transitions (and the skips they cascade into); return the targets to start.
    A `watch` is told of every join reached and every join settled. A join fires (runs or is
    skipped) at most once per (node, iteration) here: a predecessor delivered again after it
    fired, as a skip or as an arrival after its skip, does not fire it again."""
    starts: list[Start] = []
    todo = list(transitions)
    while todo:
        step = todo.pop(0)
        if isinstance(step, semantics.ExitGate):
            todo += _through_gate(graph, run_id, step, coordination)
            continue
        transition = step
        target, iteration = transition.target, transition.iteration
        predecessors = len(graph.join_predecessors(target, iteration, transition.back))
        single = predecessors <= 1
        scope = join_scope(run_id, target, iteration)
        if single:
            state = JoinState(*(({transition.predecessor: transition.value}, set()) if not transition.skipped
                                else ({}, {transition.predecessor})))
        else:  # an `all` join reads the values only once every predecessor arrived or was skipped
            values_from = 0 if graph.nodes[target].config.join == "any" else predecessors
            state = coordination.arrive(scope, transition.predecessor, transition.value, transition.skipped,
                                        values_from)
            if transition.skipped and transition.predecessor in state.arrived:
                continue  # it arrived before (an exit taken in an earlier pass): that decided
            if not transition.skipped and transition.predecessor not in state.arrived:
                continue  # it was skipped before: that decided, and the store ignored this arrival
            if watch is not None and watch.fired(target, iteration):
                watch.arrive(target, iteration, transition.predecessor, transition.back)
                continue  # settled already: a join fires once per (node, iteration)
        decision = semantics.join_decision(graph, target, iteration, state, transition.predecessor,
                                           transition.back)
        if watch is not None and not single:
            watch.arrive(target, iteration, transition.predecessor, transition.back)
            if decision.outcome != "wait":
                watch.fire(target, iteration)
        if decision.outcome == "wait":
            continue
        if not single and not coordination.claim(scope, transition.predecessor):
            continue
        if decision.outcome == "run":
            starts.append(Start(target, iteration, decision.value))
        else:
            if on_skip is not None:
                on_skip(target, iteration)
            todo += semantics.after_skip(graph, target, iteration)
    return starts
