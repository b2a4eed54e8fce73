"""Nodes and blueprints for the webhook and child-cancel integration tests (workers import this)."""

from __future__ import annotations

import os
import time
from typing import Any

import redis

from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.registry import node
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.builder import Flow

CHILD_STEPS = 8


def calls_key(run_id: str) -> str:
    """The Redis hash counting a run's node invocations."""
    return f"{os.environ.get('FLOWCRAFT_KEY_PREFIX', 'flowcraft:')}calls:{run_id}"


@node("sem-step")
def step(ctx: NodeContext) -> Any:
    """Count the call, sleep `params.seconds`, hand the input on."""
    redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")).hincrby(
        calls_key(ctx.run_id), ctx.node_id, 1)
    time.sleep(float(ctx.params.get("seconds", 0)))
    return ctx.input


@node("sem-plus")
def plus(ctx: NodeContext) -> Any:
    """Count the call; the input plus 100 (a TypeError, so a failed attempt, for a non-number)."""
    redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")).hincrby(
        calls_key(ctx.run_id), ctx.node_id, 1)
    if not isinstance(ctx.input, int):
        raise TypeError(f"cannot add 100 to {ctx.input!r}")
    return ctx.input + 100


def blueprints() -> list[Blueprint]:
    """A webhook run, a parent whose child run is a slow chain, and a subflow node with retries
    whose child waits, then adds."""
    hook = (Flow("sem-hook").node("hook", "webhook").node("paid", "sem-step").node("other", "sem-step")
            .edge("hook", "paid", action="paid").edge("hook", "other", action="refunded").build())
    parent = (Flow("sem-parent").node("first", "sem-step").node("kid", "subflow", params={"blueprintId": "sem-slow"})
              .node("after", "sem-step").chain("first", "kid", "after").build())
    slow = Flow("sem-slow")
    ids = [f"s{i}" for i in range(CHILD_STEPS)]
    for node_id in ids:
        slow.node(node_id, "sem-step", params={"seconds": 1.0})
    hook_parent = (Flow("sem-hook-parent").node("kid", "subflow", params={"blueprintId": "sem-hook"})
                   .node("after", "sem-step").edge("kid", "after").build())
    retried = (Flow("sem-retried").node("kid", "subflow", params={"blueprintId": "sem-gate"}, max_retries=3)
               .node("after", "sem-step").edge("kid", "after").build())
    gate = Flow("sem-gate").node("gate", "wait").node("plus", "sem-plus").edge("gate", "plus").build()
    return [hook, parent, slow.chain(*ids).build(), hook_parent, retried, gate]
