"""A run's frontier derived from its recorded outputs alone: what finished, what is pending.

Redis coordinates a run (joins, claims, the pending ledger) but the truth is what the durable
store records: each node execution's output, per node and iteration, with the dynamic nodes
its result added. Replaying those outputs through the engine's own decisions (`after_success`,
`dispatch.route`) from the start nodes gives the node executions that must still run, the
join arrivals and claims so far, and the graph with its dynamic nodes. Used to complete a run
only on durable evidence and to rebuild a run's Redis state after Redis lost it.

Edge conditions and transforms are evaluated against the run's current context (what the
store holds now); a recorded output always counts as the node having run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flowcraft_celery.engine import dispatch, semantics
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

    def arrive(self, scope: str, predecessor: str, value: Any, skipped: bool = False) -> JoinState:
        self.arrivals.append(Arrival(scope, predecessor, value, skipped))
        return super().arrive(scope, predecessor, value, skipped)

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
        if recorded.dynamic_nodes:
            addition = DynamicAddition.from_result(start.node_id, list(recorded.dynamic_nodes), recorded.output,
                                                   start.iteration)
            result.additions[name] = addition.to_dict()
            result.graph = result.graph.extend([addition])
        outcome = NodeResult(output=recorded.output, action=recorded.action)
        transitions = semantics.after_success(result.graph, start.node_id, start.iteration, outcome, lookup)
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
