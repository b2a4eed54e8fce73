"""A run's frontier derived from its recorded outputs alone: what finished, what is pending.

Redis coordinates a run (joins, claims, the pending ledger) but the truth is what the durable
store records: each node execution's output, per node and iteration, with the dynamic nodes
its result added and the routing decision made when it completed (`engine.decisions`).
Replaying those decisions (`semantics.after_decision`, `dispatch.route`) from the start nodes
gives the node executions that must still run, the join arrivals and claims so far, and the
graph with its dynamic nodes. Used to complete a run only on durable evidence, to rebuild a
run's Redis state after Redis lost it, and to show a run.

No condition or transform is evaluated here: a skipped edge stays skipped whatever the context
holds now. Only a record written before decisions were recorded (an older version's) is decided
against the current context, as that version did.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flowcraft_celery.engine import dispatch, semantics
from flowcraft_celery.engine.decisions import Decision
from flowcraft_celery.engine.registry import NodeResult
from flowcraft_celery.model.graph import DynamicAddition, Graph, start_nodes
from flowcraft_celery.stores.base import JoinState, RecordedOutput
from flowcraft_celery.stores.memory import MemoryCoordinationStore


def token(node_id: str, iteration: int) -> str:
    """The token of one node execution (`node@iteration`), as the ledger names it."""
    return f"{node_id}@{iteration}"


@dataclass(frozen=True)
class Arrival:
    """One predecessor's arrival (or skip) at a join, as the replay delivered it."""

    scope: str
    predecessor: str
    value: Any
    skipped: bool


@dataclass
class Frontier:
    """What a run's recorded outputs imply."""

    graph: Graph
    #: Node executions replayed as finished (token -> node id, iteration).
    finished: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: Node executions that must still run: token -> the start (node, iteration, handed value).
    pending: dict[str, dispatch.Start] = field(default_factory=dict)
    arrivals: list[Arrival] = field(default_factory=list)
    #: Joins that fired: scope -> the predecessor whose arrival claimed it.
    claims: dict[str, str] = field(default_factory=dict)
    #: Dynamic additions by the token of the node whose result added them.
    additions: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Joins reached but never settled (only meaningful once nothing is pending).
    stalled: list[dispatch.StalledJoin] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Nothing is left to run and every join reached fired: the run may report `completed`."""
        return not self.pending and not self.stalled

    @property
    def stuck(self) -> bool:
        """Nothing is left to run, yet a join was reached and never fired: the run is `stalled`."""
        return not self.pending and bool(self.stalled)


class _Recording(MemoryCoordinationStore):
    """A memory coordination store that remembers every arrival and successful claim."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[Arrival] = []
        self.claims: dict[str, str] = {}

    def arrive(self, scope: str, predecessor: str, value: Any, skipped: bool = False,
               values_from: int = 0) -> JoinState:
        self.arrivals.append(Arrival(scope, predecessor, value, skipped))
        return super().arrive(scope, predecessor, value, skipped, values_from)

    def claim(self, scope: str, token: str, ttl: float | None = None) -> bool:
        won = super().claim(scope, token, ttl)
        if won:
            self.claims.setdefault(scope, token)
        return won


def frontier(graph: Graph, run_id: str, outputs: Mapping[tuple[str, int], RecordedOutput],
             start_value: Any, lookup: semantics.Lookup) -> Frontier:
    """Replay the recorded outputs from the start nodes; see the module docstring.

    A node whose own output is missing but whose fallback's output is recorded (or, along a
    fallback chain, the output of a fallback further down) counts as finished with that output
    (the copy of it may not have been written).
    """
    coordination = _Recording()
    watch = dispatch.JoinWatch()
    result = Frontier(graph)
    todo = deque(dispatch.Start(n, 0, start_value) for n in start_nodes(graph))
    while todo:
        start = todo.popleft()
        name = token(start.node_id, start.iteration)
        if name in result.finished:
            continue
        recorded = _recorded(result.graph, outputs, start.node_id, start.iteration)
        if recorded is None:
            result.pending.setdefault(name, start)
            continue
        result.pending.pop(name, None)
        result.finished[name] = (start.node_id, start.iteration)
        decider = str(recorded.decision["node"]) if recorded.decision is not None else recorded.node_id
        if decider != start.node_id:  # a fallback stood in: its execution and the chain's above it finished
            for member in (decider, *result.graph.fallback_chain(decider)):
                result.finished.setdefault(token(member, start.iteration), (member, start.iteration))
        added = outputs.get((decider, start.iteration), recorded).dynamic_nodes
        if added:
            addition = DynamicAddition.from_result(decider, list(added), recorded.output, start.iteration)
            result.additions[token(decider, start.iteration)] = addition.to_dict()
            result.graph = result.graph.extend([addition])
        if recorded.decision is not None:
            decision = Decision.from_dict(recorded.decision)
        else:  # a record of a version that did not record decisions: decided now, as that version did
            outcome = NodeResult(output=recorded.output, action=recorded.action)
            decision = semantics.decide(result.graph, decider, start.iteration, outcome, lookup)
        transitions = semantics.after_decision(result.graph, start.iteration, recorded.output, decision)
        todo.extend(dispatch.route(result.graph, run_id, transitions, coordination, watch=watch))
    result.arrivals = coordination.arrivals
    result.claims = coordination.claims
    result.stalled = watch.stalled(result.graph)
    return result


def _recorded(graph: Graph, outputs: Mapping[tuple[str, int], RecordedOutput], node_id: str,
              iteration: int) -> RecordedOutput | None:
    """The node's recorded output, else the first one recorded down its fallback chain."""
    for candidate in (node_id, *graph.fallbacks_below(node_id)):
        recorded = outputs.get((candidate, iteration))
        if recorded is not None:
            return recorded
    return None
