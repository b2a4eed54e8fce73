"""Routing a node's transitions through the coordination store: which targets start now.

Shared by the local runner and the Celery bridge. Each arrival or skip is recorded once per
(run, target, iteration); the engine decides readiness; a once-only claim (keyed by the
arriving predecessor, so a redelivery of the same arrival re-claims) makes a join start its
target once. Skips cascade through nodes that become unreachable.
"""

from __future__ import annotations

from collections.abc import Callable
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


def join_scope(run_id: str, target: str, iteration: int) -> str:
    """The coordination scope of one join: arrivals and the claim at (target, iteration) of a run."""
    return f"{run_id}:{target}@{iteration}"


def join_scopes(graph: Graph, run_id: str, last_iteration: int) -> list[str]:
    """Every scope `route` may have used in a run of `graph` whose tokens reached `last_iteration`
    (targets with several predecessors to wait for, up to a loop's next iteration)."""
    return [join_scope(run_id, target, iteration) for target in graph.nodes for iteration in range(last_iteration + 2)
            if len(graph.join_predecessors(target, iteration)) > 1]


def route(
    graph: Graph,
    run_id: str,
    transitions: list[semantics.Transition],
    coordination: CoordinationStore,
    on_skip: Callable[[str, int], None] | None = None,
) -> list[Start]:
    """Deliver transitions (and the skips they cascade into); return the targets to start."""
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
        decision = semantics.join_decision(graph, target, iteration, state, transition.predecessor,
                                           transition.back)
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
