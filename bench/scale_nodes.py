"""The scale benchmark's blueprints (`bench/scale_bench.py`): runs that stay alive while idle.

Workers load them through FLOWCRAFT_BLUEPRINTS=bench.scale_nodes:blueprints; their nodes are the
no-op of `bench/workflow_nodes.py`. The fan-out's parallel nodes go to BENCH_PARKED_QUEUE, a queue
no worker consumes, so those runs stay active (messages queued) for as long as the benchmark runs.
"""

from __future__ import annotations

import os

from bench.workflow_nodes import NOOP
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.builder import Flow

AWAIT_ID = "sc-await"
SLEEP_ID = "sc-sleep"
CHILD_ID = "sc-child"
PARENT_ID = "sc-parent"
FAN_ID = "sc-fan"
NEW_ID = "sc-new"
FAN_WIDTH = 10


def parked_queue() -> str:
    """The queue the fan-outs' parallel nodes wait on (nobody consumes it)."""
    return os.environ.get("BENCH_PARKED_QUEUE", "sc-parked")


def blueprints() -> list[Blueprint]:
    """Awaiting an approval, sleeping for a day, a parent of a sleeping child, an active fan-out, one node."""
    fan = Flow(FAN_ID).node("start", NOOP).node("join", NOOP)
    for i in range(FAN_WIDTH):
        fan.node(f"p{i}", NOOP, queue=parked_queue()).edge("start", f"p{i}").edge(f"p{i}", "join")
    return [
        Flow(AWAIT_ID).node("gate", "wait").node("after", NOOP).edge("gate", "after").build(),
        Flow(SLEEP_ID).node("nap", "sleep", params={"duration": "1d"}).node("after", NOOP).edge("nap", "after").build(),
        Flow(CHILD_ID).node("nap", "sleep", params={"duration": "1d"}).node("after", NOOP).edge("nap", "after").build(),
        Flow(PARENT_ID).node("kid", "subflow", params={"blueprintId": CHILD_ID}).node("after", NOOP)
        .edge("kid", "after").build(),
        fan.build(),
        Flow(NEW_ID).node("only", NOOP).build(),
    ]
