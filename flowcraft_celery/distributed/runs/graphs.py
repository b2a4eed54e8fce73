"""The graph a run executes: its blueprint's (cached per blueprint) or, with dynamic nodes, the run's own."""

from __future__ import annotations

from flowcraft_celery.distributed.core.runtime import Runtime
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.graph import DynamicAddition, Graph

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
