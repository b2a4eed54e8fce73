"""Nodes and blueprints for the retention and purge tests: runs that complete, fail, wait and sleep."""

from __future__ import annotations

import time
from typing import Any

from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.registry import node
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.builder import Flow


@node("rt-step")
def step(ctx: NodeContext) -> Any:
    """Write a context key of its own and return the node id."""
    ctx.context.set(f"seen.{ctx.node_id}", True)
    return ctx.node_id


#: Seconds the `rt-long` node takes (the in-flight test's busy worker).
LONG = 15.0


@node("rt-long")
def long(ctx: NodeContext) -> Any:
    """Keep a worker's only pool process busy for LONG seconds."""
    time.sleep(LONG)
    return ctx.node_id


@node("rt-boom")
def boom(ctx: NodeContext) -> Any:
    """Fail every attempt."""
    raise RuntimeError(f"{ctx.node_id} fails on purpose")


#: Parallel nodes of `rt-wide`, the backlog test's fan-out.
WIDE = 25


def blueprints() -> list[Blueprint]:
    """A fan-out with a join (completes), a failing node, a run waiting for an event, a sleeping
    one, a wide fan-out and a long node (the reconcile backlog tests), a parent of a sleeping child."""
    fan = Flow("rt-fan").node("start", "rt-step").node("join", "rt-step").node("end", "rt-step")
    for branch in ("a", "b", "c"):
        fan.node(branch, "rt-step").edge("start", branch).edge(branch, "join")
    wide = Flow("rt-wide").node("start", "rt-step").node("join", "rt-step")
    for i in range(WIDE):
        wide.node(f"p{i}", "rt-step").edge("start", f"p{i}").edge(f"p{i}", "join")
    return [
        fan.edge("join", "end").build(),
        wide.build(),
        Flow("rt-long").node("start", "rt-long").build(),
        Flow("rt-fail").node("start", "rt-step").node("boom", "rt-boom").chain("start", "boom").build(),
        Flow("rt-wait").node("start", "rt-step").node("gate", "wait").node("after", "rt-step")
        .chain("start", "gate", "after").build(),
        Flow("rt-sleep").node("start", "rt-step").node("nap", "sleep", params={"duration": "1h"})
        .node("after", "rt-step").chain("start", "nap", "after").build(),
        Flow("rt-parent").node("kid", "subflow", params={"blueprintId": "rt-sleep"}).node("after", "rt-step")
        .chain("kid", "after").build(),
    ]
