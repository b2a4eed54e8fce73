"""Node implementations used by the language guide (docs/language/); each example blueprint here uses them.

Run an example with: flowcraft-celery run examples/language/<name>.json --local --registry examples.language.nodes
"""

from __future__ import annotations

import asyncio
from typing import Any

from flowcraft_celery import Node, NodeContext, NodeResult, node


@node("score")
def score(ctx: NodeContext) -> NodeResult:
    """Score an order: the action says which way the flow goes."""
    amount = ctx.input["amount"]
    return NodeResult(output={"amount": amount, "risk": "high" if amount > 100 else "low"},
                      action="review" if amount > 100 else "accept")


@node("note")
def note(ctx: NodeContext) -> str:
    """Write the input into the context under `params.key`, and return it."""
    ctx.context.set(ctx.params["key"], ctx.input)
    return f"{ctx.params['key']}: {ctx.input}"


@node("count")
def count(ctx: NodeContext) -> int:
    """Add one to `context.counter` (a loop body)."""
    value = int(ctx.context.get("counter", 0)) + 1
    ctx.context.set("counter", value)
    return value


@node("square")
def square(ctx: NodeContext) -> int:
    """One batch item: its square."""
    return int(ctx.input) ** 2


_calls: dict[str, int] = {}


@node("flaky")
def flaky(ctx: NodeContext) -> str:
    """Fails on its first two attempts of a run (say, a busy service), then succeeds."""
    _calls[ctx.idempotency_key] = _calls.get(ctx.idempotency_key, 0) + 1
    if ctx.attempt < 3:
        raise ConnectionError(f"service busy (attempt {ctx.attempt})")
    return f"ok after {ctx.attempt} attempts"


@node("always-down")
def always_down(ctx: NodeContext) -> Any:
    """A service that never answers."""
    raise ConnectionError("payment service down")


@node("manual-payment")
def manual_payment(ctx: NodeContext) -> str:
    """The fallback: queue the payment for a person."""
    return "queued for manual payment"


@node("charge")
class Charge(Node):
    """A class node: prepare, execute (retried), post-process, and a fallback of its own."""

    def prep(self, ctx: NodeContext) -> dict[str, Any]:               # default: returns ctx.input
        return {"cents": round(float(ctx.input) * 100)}

    def exec(self, prepared: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:   # retried up to maxRetries
        if prepared["cents"] <= 0:
            raise ValueError("nothing to charge")
        return {"charged": prepared["cents"], "key": ctx.idempotency_key}

    def post(self, result: dict[str, Any], ctx: NodeContext) -> NodeResult:   # default: unchanged
        return NodeResult(output=result, action="paid")

    def fallback(self, error: BaseException, ctx: NodeContext) -> NodeResult:
        # after the last failed exec attempt; default: re-raise (the node fails)
        return NodeResult(output={"charged": 0, "reason": str(error)}, action="free")

    def recover(self, error: BaseException, ctx: NodeContext) -> None:
        """Clean up after an error escaped any phase (default: nothing)."""


@node("plan")
def plan(ctx: NodeContext) -> NodeResult:
    """Add one `check` node per host to this run; `report` waits for all of them."""
    return NodeResult(output={"gatherNodeId": "report"},
                      dynamic_nodes=[{"id": f"check_{i}", "uses": "check", "input": host}
                                     for i, host in enumerate(ctx.input)])


@node("check")
async def check(ctx: NodeContext) -> str:   # async def works too
    await asyncio.sleep(0.01)               # say, a call with an async HTTP client
    return f"{ctx.input}: up"


@node("summarize")
def summarize(ctx: NodeContext) -> list[str]:
    """After a join: the outputs of the `check_*` predecessors, in order."""
    return [value for key, value in sorted(ctx.input.items()) if key.startswith("check_")]
