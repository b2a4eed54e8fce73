"""Nodes and blueprints for the bridge integration tests; every invocation is counted in Redis.

Workers import this module (`FLOWCRAFT_NODE_MODULES`); the counts live in the hash
`<FLOWCRAFT_KEY_PREFIX>calls:<run id>` (field: node id) so a test sees every worker process.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis

from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.registry import node
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.builder import Flow

FAN_WIDTH = 200
CHAIN_LENGTH = 5
LONG_WIDTH = 5
LONG_SECONDS = 3.0


def calls_key(run_id: str) -> str:
    """The Redis hash counting a run's node invocations."""
    return f"{os.environ.get('FLOWCRAFT_KEY_PREFIX', 'flowcraft:')}calls:{run_id}"


def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


def _count(ctx: NodeContext) -> None:
    _redis().hincrby(calls_key(ctx.run_id), ctx.node_id, 1)


@node("bt-step")
def step(ctx: NodeContext) -> Any:
    """Count the call, sleep `params.seconds` (default none), hand the input on."""
    _count(ctx)
    time.sleep(float(ctx.params.get("seconds", 0)))
    return ctx.input if ctx.input is not None else ctx.node_id


def workers_key(run_id: str) -> str:
    """The Redis hash recording which worker (its main process id) ran each long node of a run."""
    return f"{os.environ.get('FLOWCRAFT_KEY_PREFIX', 'flowcraft:')}workers:{run_id}"


@node("bt-long")
def long_step(ctx: NodeContext) -> None:
    """Record which worker runs it, then sleep `params.seconds`: a long node."""
    _redis().hset(workers_key(ctx.run_id), ctx.node_id, os.getppid())
    time.sleep(float(ctx.params["seconds"]))


@node("bt-part")
def part(ctx: NodeContext) -> int:
    """A fan-out branch: writes its own context key and returns 1."""
    _count(ctx)
    ctx.context.set(f"part.{ctx.node_id}", ctx.node_id)
    return 1


@node("bt-sum")
def total(ctx: NodeContext) -> int:
    """The fan-in: the sum of every branch's output."""
    _count(ctx)
    snapshot = ctx.context.to_json()
    return sum(int(v) for k, v in snapshot.items() if k.startswith("_outputs.p"))


@node("bt-big")
def big(ctx: NodeContext) -> int:
    """Writes three 250 KB context values: the final context is too large for the status item."""
    _count(ctx)
    for i in range(3):
        ctx.context.set(f"big.{i}", str(i) * 250_000)
    return 3


@node("bt-counter")
def counter(ctx: NodeContext) -> int:
    """context[params.key] + 1 (or `params.reset` when given), stored and returned."""
    _count(ctx)
    key = str(ctx.params["key"])
    value = int(ctx.params["reset"]) if "reset" in ctx.params else int(ctx.context.get(key) or 0) + 1
    ctx.context.set(key, value)
    return value


def _nested_wait() -> Blueprint:
    """An outer loop (2 passes) around an inner loop (2 passes) whose body waits at `ask`."""
    return (Flow("bt-nested-wait").node("init", "bt-counter", params={"key": "o", "reset": 0})
            .node("octl", "loop-controller", params={"condition": "o < 2"}, join="any")
            .node("obody", "bt-counter", params={"key": "o"})
            .node("zi", "bt-counter", params={"key": "i", "reset": 0})
            .node("ictl", "loop-controller", params={"condition": "i < 2"}, join="any")
            .node("ibody", "bt-counter", params={"key": "i"}).node("ask", "wait").node("done", "bt-step")
            .edge("init", "octl").edge("octl", "obody", action="continue").edge("obody", "zi").edge("zi", "ictl")
            .edge("ictl", "ibody", action="continue").edge("ibody", "ask").edge("ask", "ictl")
            .edge("ictl", "octl", action="break").edge("octl", "done", action="break").build())


def _fan() -> Blueprint:
    flow = Flow("bt-fan").node("start", "bt-step").node("join", "bt-sum")
    for i in range(FAN_WIDTH):
        flow.node(f"p{i}", "bt-part").edge("start", f"p{i}").edge(f"p{i}", "join")
    return flow.build()


def _long_fan() -> Blueprint:
    flow = Flow("bt-long-fan").node("start", "bt-step").node("join", "bt-step")
    for i in range(LONG_WIDTH):
        flow.node(f"l{i}", "bt-long", params={"seconds": LONG_SECONDS}).edge("start", f"l{i}").edge(f"l{i}", "join")
    return flow.build()


def _chain(blueprint_id: str, seconds: list[float]) -> Blueprint:
    ids = [f"c{i}" for i in range(len(seconds))]
    flow = Flow(blueprint_id)
    for node_id, wait in zip(ids, seconds, strict=True):
        flow.node(node_id, "bt-step", params={"seconds": wait})
    return flow.chain(*ids).build()


def _approval() -> Blueprint:
    return (Flow("bt-approval").node("gate", "wait").node("approved", "bt-step").node("rejected", "bt-step")
            .edge("gate", "approved", action="approve").edge("gate", "rejected", action="reject").build())


def _napping() -> Blueprint:
    return (Flow("bt-stall").node("c0", "bt-step").node("nap", "sleep", params={"duration": "4s"})
            .node("c2", "bt-step").chain("c0", "nap", "c2").build())


def heavy_queue() -> str:
    """The queue that `bt-routed`'s middle node is routed to (unique per test module)."""
    return f"{os.environ.get('FLOWCRAFT_DEFAULT_QUEUE', 'flowcraft')}-heavy"


def _routed() -> Blueprint:
    return (Flow("bt-routed").node("a", "bt-step").node("heavy", "bt-step", queue=heavy_queue())
            .node("b", "bt-step").chain("a", "heavy", "b").build())


def _versioned() -> Blueprint:
    """Its version comes from BT_VERSION, so workers and the client can disagree on purpose."""
    return Flow("bt-versioned", version=os.environ.get("BT_VERSION", "1")).node("only", "bt-step").build()


def _unversioned() -> Blueprint:
    """No metadata.version; BT_EDIT changes its content (an edit without a version bump)."""
    return Flow("bt-unversioned").node("only", "bt-step", params={"edit": os.environ.get("BT_EDIT", "")}).build()


def blueprints() -> list[Blueprint]:
    """What workers and the client both know."""
    return [
        _routed(),
        _unversioned(),
        Flow("bt-big").node("write", "bt-big").build(),
        _versioned(),
        _fan(),
        _long_fan(),
        _chain("bt-dup", [3.0, 0.0]),
        _chain("bt-cancel", [1.5] * CHAIN_LENGTH),
        _approval(),
        _chain("bt-kill", [0.0, 5.0, 0.0]),
        _napping(),
        _nested_wait(),
    ]


def client_blueprints() -> list[Blueprint]:
    """Known to the client only: workers must fail its runs with a clear reason."""
    return [_chain("bt-client-only", [0.0, 0.0])]
