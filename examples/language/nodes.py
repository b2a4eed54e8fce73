"""Node implementations used by the language guide (docs/language/); each example blueprint here uses them.

Run an example with: flowcraft-celery run examples/language/<name>.json --local --registry examples.language.nodes
"""

from __future__ import annotations

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

    def prep(self, ctx: NodeContext) -> dict[str, Any]:
        return {"cents": round(float(ctx.input) * 100)}

    def exec(self, prepared: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
        if prepared["cents"] <= 0:
            raise ValueError("nothing to charge")
        return {"charged": prepared["cents"], "key": ctx.idempotency_key}

    def post(self, result: dict[str, Any], ctx: NodeContext) -> NodeResult:
        return NodeResult(output=result, action="paid")

    def fallback(self, error: BaseException, ctx: NodeContext) -> NodeResult:
        return NodeResult(output={"charged": 0, "reason": str(error)}, action="free")
