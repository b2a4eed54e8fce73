"""The soak's blueprint and node (`bench/soak.py`): start -> WIDTH parallel -> all-join, every node
the same no-op that appends `<run> <node>` to BENCH_SOAK_CALLS, so the soak can count each node
execution (one short line per write, appended, so writers in several processes never interleave).
"""

from __future__ import annotations

import os
from typing import Any

from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.registry import node
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.builder import Flow

SOAK_ID = "soak-fan"
STEP = "soak-step"
WIDTH = 8
NODES_PER_RUN = WIDTH + 2


@node(STEP)
def step(ctx: NodeContext) -> Any:
    """Record this execution and return a small output."""
    path = os.environ.get("BENCH_SOAK_CALLS")
    if path:
        with open(path, "a", encoding="utf-8") as calls:
            calls.write(f"{ctx.run_id} {ctx.node_id}\n")
    return {"ok": True}


def node_ids() -> set[str]:
    """Every node of the soak blueprint."""
    return {"start", "join", *(f"p{i}" for i in range(WIDTH))}


def blueprints() -> list[Blueprint]:
    """The soak's one graph."""
    flow = Flow(SOAK_ID).node("start", STEP).node("join", STEP)
    for i in range(WIDTH):
        flow.node(f"p{i}", STEP).edge("start", f"p{i}").edge(f"p{i}", "join")
    return [flow.build()]
