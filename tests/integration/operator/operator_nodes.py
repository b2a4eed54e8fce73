"""Nodes and blueprints of the operator tests: a fan-out with a flaky branch, a sleep and a wait.

`op-flow`: start -> (left, right, flaky) -> join -> nap (sleep) -> approval (wait) -> finish.
`flaky` fails its first attempt (retried after 500 ms); every node logs a line of its own, which
the tests look for with its run, blueprint, node and iteration. `op-stuck` routes its only node
to a queue no worker reads, so the run stalls and a reconcile pass finds it; `op-quick` is two
steps.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.registry import node
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.builder import Flow

logger = logging.getLogger("op.nodes")

#: Seconds the `nap` node sleeps: long enough for three CLI calls to look at the sleeping run on a
#: loaded 2-core CI machine (a CLI call can take several seconds there).
NAP_SECONDS = 40
FAN = ("left", "right", "flaky")


@node("op-step")
def step(ctx: NodeContext) -> Any:
    """Log a line and hand on the node id."""
    logger.warning("op-step working on %s", ctx.node_id)
    return ctx.node_id


@node("op-flaky")
def flaky(ctx: NodeContext) -> str:
    """Fail the first attempt, succeed the next."""
    logger.warning("op-flaky attempt %s", ctx.attempt)
    if ctx.attempt == 1:
        raise RuntimeError("flaky fails its first attempt")
    return f"ok after {ctx.attempt}"


def _flow() -> Blueprint:
    flow = Flow("op-flow").node("start", "op-step").node("join", "op-step", join="all")
    for branch in FAN:
        flow.node(branch, "op-flaky" if branch == "flaky" else "op-step",
                  max_retries=2 if branch == "flaky" else None, retry_delay=500 if branch == "flaky" else None)
        flow.edge("start", branch).edge(branch, "join")
    flow.node("nap", "sleep", params={"duration": f"{NAP_SECONDS}s"}).node("approval", "wait")
    flow.node("finish", "op-step").chain("join", "nap", "approval", "finish")
    return flow.build()


def _stuck() -> Blueprint:
    nowhere = f"{os.environ.get('FLOWCRAFT_DEFAULT_QUEUE')}-nowhere"
    return Flow("op-stuck").node("lost", "op-step", queue=nowhere).build()


def _quick() -> Blueprint:
    return Flow("op-quick").node("start", "op-step").node("finish", "op-step").chain("start", "finish").build()


blueprints = [_flow(), _stuck(), _quick()]
