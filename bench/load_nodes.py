"""The load benchmark's blueprint (`bench/load_bench.py`): start -> N parallel -> all-join -> end.

Workers load it through FLOWCRAFT_BLUEPRINTS=bench.load_nodes:blueprints; its nodes are the
no-op of `bench/workflow_nodes.py` (FLOWCRAFT_NODE_MODULES), which also dumps each worker
process's request and execution counters. The width comes from BENCH_LOAD_WIDTH so the
benchmark and its workers build the same graph.
"""

from __future__ import annotations

import os

from bench.workflow_nodes import NOOP
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.builder import Flow

LOAD_ID = "lb-fan"


def width() -> int:
    """How many parallel nodes the load graph has."""
    return int(os.environ.get("BENCH_LOAD_WIDTH", "100"))


def fan_with_end(blueprint_id: str, parallel: int) -> Blueprint:
    """`start -> p0..p<parallel-1> -> join -> end` (`join` waits for all of them)."""
    flow = Flow(blueprint_id).node("start", NOOP).node("join", NOOP).node("end", NOOP)
    for i in range(parallel):
        flow.node(f"p{i}", NOOP).edge("start", f"p{i}").edge(f"p{i}", "join")
    return flow.edge("join", "end").build()


def blueprints() -> list[Blueprint]:
    """The benchmark's one graph, sized from the environment."""
    return [fan_with_end(LOAD_ID, width())]
