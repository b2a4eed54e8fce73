"""Routing a node's transitions through the coordination store: which targets start now.

Shared by the local runner and the Celery bridge. Each arrival or skip is recorded once per
(run, target, iteration); the engine decides readiness; a once-only claim (keyed by the
arriving predecessor, so a redelivery of the same arrival re-claims) makes a join start its
target once. Skips cascade through nodes that become unreachable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flowcraft_celery.engine import semantics
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


def route(
    graph: Graph,
    run_id: str,
    transitions: list[semantics.Transition],
    coordination: CoordinationStore,
    on_skip: Callable[[str, int], None] | None = None,
    watch: JoinWatch | None = None,
) -> list[Start]:
    """Deliver transitions (and the skips they cascade into); return the targets to start.
    A `watch` is told of every join reached and every join settled."""
    starts: list[Start] = []
    todo = list(transitions)
    while todo:
        transition = todo.pop(0)
        target, iteration = transition.target, transition.iteration
        single = len(graph.join_predecessors(target, iteration, transition.back)) <= 1
        scope = join_scope(run_id, target, iteration)
        if single:
            state = JoinState(*(({transition.predecessor: transition.value}, set()) if not transition.skipped
                                else ({}, {transition.predecessor})))
        else:
            state = coordination.arrive(scope, transition.predecessor, transition.value, transition.skipped)
            if transition.skipped and transition.predecessor in state.arrived:
                continue  # it arrived before (an exit taken, then skipped as the loop was left): that decided
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
