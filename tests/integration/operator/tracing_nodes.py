"""The node and blueprint of the tracing test: a run that crosses two workers by queue.

`trace-flow`: start -> (left on `<default>-b`, right) -> join on `<default>-b` -> finish. The
default queue's worker runs start, right and finish; the `-b` worker runs left and join, so every
hop of the run's trace between them travels in a task message's headers. `trace-nap`: start ->
nap (sleeps `NAP_SECONDS`) -> finish, long enough for the test to drop the run's Redis state.
"""

from __future__ import annotations

import os
from typing import Any

from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.registry import node
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.builder import Flow


@node("trace-step")
def step(ctx: NodeContext) -> Any:
    """Hand on the node id."""
    return ctx.node_id


def _flow() -> Blueprint:
    other = f"{os.environ.get('FLOWCRAFT_DEFAULT_QUEUE', 'tasks')}-b"
    flow = Flow("trace-flow").node("start", "trace-step").node("right", "trace-step")
    flow.node("left", "trace-step", queue=other).node("join", "trace-step", join="all", queue=other)
    flow.node("finish", "trace-step")
    return flow.edge("start", "left").edge("start", "right").chain("left", "join").edge("right", "join") \
        .chain("join", "finish").build()


#: Seconds `trace-nap` sleeps.
NAP_SECONDS = 6


def _nap() -> Blueprint:
    flow = Flow("trace-nap").node("start", "trace-step").node("nap", "sleep", params={"duration": f"{NAP_SECONDS}s"})
    return flow.node("finish", "trace-step").chain("start", "nap", "finish").build()


blueprints = [_flow(), _nap()]
