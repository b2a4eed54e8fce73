"""Nodes and blueprints of the fault tests; every invocation is appended to a file.

Calls are counted in `FAULT_CALLS_FILE` (one line per invocation: run, node, iteration, time),
not in Redis or Cosmos, so a count survives the very services the tests break.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.registry import node
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.builder import Flow

WIDTH = 6
CHAIN = 3


def _count(ctx: NodeContext) -> None:
    path = os.environ.get("FAULT_CALLS_FILE")
    if path:
        with open(path, "a", encoding="utf-8") as calls:
            calls.write(f"{ctx.run_id} {ctx.node_id} {ctx.iteration} {ctx.attempt} {time.time():.3f}\n")


@node("ft-step")
def step(ctx: NodeContext) -> Any:
    """Count the call, sleep `params.seconds`, write `k.<node>` when `params.write`, hand the input on."""
    _count(ctx)
    time.sleep(float(ctx.params.get("seconds", 0)))
    if ctx.params.get("write"):
        ctx.context.set(f"k.{ctx.node_id}", ctx.node_id)
    return ctx.input if ctx.input is not None else ctx.node_id


@node("ft-crash")
def crash(ctx: NodeContext) -> None:
    """Kill the worker process running it, every time."""
    _count(ctx)
    os.kill(os.getpid(), signal.SIGKILL)


@node("ft-flaky")
def flaky(ctx: NodeContext) -> str:
    """Fail every attempt before `params.succeed_on`; succeed then (each retry waits out `retryDelay`)."""
    _count(ctx)
    if ctx.attempt < int(ctx.params.get("succeed_on", 2)):
        raise RuntimeError(f"attempt {ctx.attempt} fails")
    return f"attempt {ctx.attempt}"


@node("ft-huge")
def huge(ctx: NodeContext) -> str:
    """An output over the store's limit (3 MiB)."""
    _count(ctx)
    return "x" * (3 * 1024 * 1024)


@node("ft-odd")
def odd(ctx: NodeContext) -> Any:
    """Write a context value that is not JSON (`params.where` context), or return one (output)."""
    _count(ctx)
    if ctx.params.get("where") == "context":
        ctx.context.set("odd", {1, 2})
    return {1, 2}


def _wide(blueprint_id: str, seconds: float, write: bool) -> Blueprint:
    """start -> WIDTH parallel steps -> all-join -> a chain of CHAIN steps."""
    flow = Flow(blueprint_id).node("start", "ft-step").node("join", "ft-step")
    for i in range(WIDTH):
        flow.node(f"p{i}", "ft-step", params={"seconds": seconds, "write": write})
        flow.edge("start", f"p{i}").edge(f"p{i}", "join")
    chain = [f"c{i}" for i in range(CHAIN)]
    for name in chain:
        flow.node(name, "ft-step", params={"seconds": seconds})
    return flow.chain("join", *chain).build()


def wide_nodes() -> set[str]:
    """Every node of a `_wide` blueprint."""
    return {"start", "join", *(f"p{i}" for i in range(WIDTH)), *(f"c{i}" for i in range(CHAIN))}


def _long_wait() -> Blueprint:
    """a -> gate (wait) -> j (all) <- side <- a, and j -> after; plus an any-join `first`."""
    return (Flow("ft-longwait").node("a", "ft-step").node("gate", "wait").node("side", "ft-step")
            .node("j", "ft-step").node("first", "ft-step", join="any").node("after", "ft-step")
            .edge("a", "gate").edge("a", "side").edge("gate", "j").edge("side", "j")
            .edge("gate", "first").edge("side", "first").edge("j", "after").build())


def blueprints() -> list[Blueprint]:
    """What the fault tests' workers and clients know."""
    return [
        _wide("ft-wide", 0.4, False),
        _wide("ft-writes", 0.2, True),
        _wide("ft-fan", 0.05, True),
        _long_wait(),
        Flow("ft-crashloop").node("a", "ft-step").node("boom", "ft-crash").node("b", "ft-step")
        .chain("a", "boom", "b").build(),
        Flow("ft-retry").node("r", "ft-flaky", params={"succeed_on": 3}, max_retries=3, retry_delay=8000)
        .node("b", "ft-step").chain("r", "b").build(),
        Flow("ft-slow").node("long", "ft-step", params={"seconds": 8}).node("b", "ft-step").chain("long", "b").build(),
        Flow("ft-huge").node("big", "ft-huge", max_retries=3).node("b", "ft-step").chain("big", "b").build(),
        Flow("ft-other").node("x", "ft-step").build(),
        Flow("ft-heavy").node("a", "ft-step")
        .node("h", "ft-step", queue=os.environ.get("FAULT_HEAVY_QUEUE", "ft-heavy"))
        .node("b", "ft-step").chain("a", "h", "b").build(),
        Flow("ft-odd-context").node("n", "ft-odd", params={"where": "context"}, max_retries=3).build(),
        Flow("ft-odd-output").node("n", "ft-odd", max_retries=3).build(),
        Flow("ft-kid").node("k", "ft-step", params={"write": True}, queue=os.environ.get("FAULT_KID_QUEUE", "ft-kids"))
        .build(),
        Flow("ft-parent").node("sub", "subflow", params={"blueprintId": "ft-kid", "outputs": {"fromKid": "k.k"}})
        .node("b", "ft-step").chain("sub", "b").build(),
        Flow("ft-nap").node("a", "ft-step").node("nap", "sleep", params={"duration": "8s"}).node("b", "ft-step")
        .chain("a", "nap", "b").build(),
    ]
