"""Nodes, blueprints and request-counter dumps for the workflow benchmark (`bench/workflow_bench.py`).

Workers import this module (FLOWCRAFT_NODE_MODULES). Graph sizes come from BENCH_CHAIN,
BENCH_FAN, BENCH_RUN_FAN, BENCH_LONG_WIDTH and BENCH_LONG_SECONDS so the benchmark process and its
workers build the same blueprints.
When BENCH_STATS_DIR is set, every worker process (the consumer and each pool child) writes its
Azure queue and Cosmos request counters (and how often it ran the no-op node) to
`<BENCH_STATS_DIR>/<pid>.json` five times a second,
because those counters live in the process that made the requests.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import redis
from celery.signals import task_prerun, worker_process_init, worker_ready

from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.registry import node
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.builder import Flow
from flowcraft_celery.stores.cosmos_client import request_counts
from transports.azurequeue.stats import STATS

NOOP = "wfb-noop"
CHAIN_ID = "wfb-chain"
FAN_ID = "wfb-fan"
RUN_FAN_ID = "wfb-run-fan"
PICKUP_ID = "wfb-pickup"
SLEEP = "wfb-sleep"
LONG_ID = "wfb-long-fan"
#: Redis list (on REDIS_URL) where each long node records `<worker pid> <start> <end>` (epoch seconds).
LONG_KEY = "wfb:long"
#: Redis list (on REDIS_URL) where a worker stamps the time it starts a pick-up run's task.
PICKUP_KEY = "wfb:pickup"
STATS_PERIOD = 0.2
#: Times this process ran the no-op node (a benchmark's extra executions are runs beyond one per node).
EXECUTIONS = [0]


@node(NOOP)
def noop(ctx: NodeContext) -> Any:
    """Do nothing: hand the input on, so a hop costs only the engine's own work."""
    EXECUTIONS[0] += 1
    return ctx.input


@node(SLEEP)
def sleep(ctx: NodeContext) -> Any:
    """Sleep BENCH_LONG_SECONDS (a long node) and record which worker ran it, and when."""
    started = time.time()
    time.sleep(float(os.environ.get("BENCH_LONG_SECONDS", "3")))
    redis.Redis.from_url(os.environ["REDIS_URL"]).rpush(LONG_KEY, f"{os.getppid()} {started!r} {time.time()!r}")
    return ctx.input


def _size(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def chain(length: int) -> Blueprint:
    """`c0 -> c1 -> ... -> c<length-1>`."""
    ids = [f"c{i}" for i in range(length)]
    flow = Flow(CHAIN_ID)
    for node_id in ids:
        flow.node(node_id, NOOP)
    return flow.chain(*ids).build()


def fan(blueprint_id: str, width: int, uses: str = NOOP) -> Blueprint:
    """`start -> p0..p<width-1> -> join` (an `all` join of `width` arrivals); the branches run `uses`."""
    flow = Flow(blueprint_id).node("start", NOOP).node("join", NOOP)
    for i in range(width):
        flow.node(f"p{i}", uses).edge("start", f"p{i}").edge(f"p{i}", "join")
    return flow.build()


def blueprints() -> list[Blueprint]:
    """The benchmark's graphs, sized from the environment."""
    return [chain(_size("BENCH_CHAIN", 20)), fan(FAN_ID, _size("BENCH_FAN", 100)),
            fan(RUN_FAN_ID, _size("BENCH_RUN_FAN", 10)), Flow(PICKUP_ID).node("only", NOOP).build(),
            fan(LONG_ID, _size("BENCH_LONG_WIDTH", 5), SLEEP)]


def _stamp_pickup(kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    """Record when a worker starts the task of a pick-up run (before any of the task's own work)."""
    msg = (kwargs or {}).get("msg")
    if isinstance(msg, dict) and msg.get("bp") == PICKUP_ID:
        redis.Redis.from_url(os.environ["REDIS_URL"]).rpush(PICKUP_KEY, repr(time.time()))


def _dump_forever(folder: Path) -> None:
    """Write this process's request counters to `<folder>/<pid>.json` every STATS_PERIOD seconds
    when they changed (an idle process then costs the benchmark's CPU figures nothing)."""
    path = folder / f"{os.getpid()}.json"
    tmp = folder / f"{os.getpid()}.tmp"
    written = None
    while True:
        time.sleep(STATS_PERIOD)
        queue_kinds = {k: v for k, v in STATS.snapshot().items() if k.startswith("queue.")}
        cosmos_kinds = request_counts()
        current = (queue_kinds, cosmos_kinds, EXECUTIONS[0])
        if current == written:
            continue
        tmp.write_text(json.dumps({"queue": sum(queue_kinds.values()), "cosmos": sum(cosmos_kinds.values()),
                                   "executions": EXECUTIONS[0],
                                   "kinds": {**queue_kinds, **{f"cosmos.{k}": v for k, v in cosmos_kinds.items()}}}))
        os.replace(tmp, path)
        written = current


def _start_dumping(**_: Any) -> None:
    """Start the counter writer of this worker process, if the benchmark asked for one."""
    folder = os.environ.get("BENCH_STATS_DIR")
    if folder:
        threading.Thread(target=_dump_forever, args=(Path(folder),), daemon=True).start()


task_prerun.connect(_stamp_pickup, weak=False)
worker_ready.connect(_start_dumping, weak=False)
worker_process_init.connect(_start_dumping, weak=False)
