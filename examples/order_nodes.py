"""Node implementations of examples/order-flow.json: an order checked, charged and shipped.

`charge-payment` fails its first attempt (a flaky payment gateway) to show retries; the
order in the demo context is low-risk, so `decide` ships it and the review branch is skipped.
"""

from __future__ import annotations

import hashlib
from typing import Any

from flowcraft_celery import NodeContext, NodeResult, node


@node("validate-order")
def validate_order(ctx: NodeContext) -> dict[str, Any]:
    """Reject an order without items; compute its total."""
    order = ctx.input or {}
    items = order.get("items") or []
    if not items:
        raise ValueError("order has no items")
    total = sum(i["qty"] * i["price"] for i in items)
    return {"orderId": order.get("id"), "total": round(total, 2), "items": items}


@node("check-inventory")
def check_inventory(ctx: NodeContext) -> dict[str, Any]:
    """Every item is in stock in this demo."""
    return {"inStock": True, "skus": [i["sku"] for i in ctx.input["items"]]}


@node("charge-payment")
def charge_payment(ctx: NodeContext) -> dict[str, Any]:
    """Charge the card; the first attempt times out at the gateway, the retry succeeds."""
    if ctx.attempt == 1:
        raise ConnectionError("payment gateway timed out")
    receipt = hashlib.sha256(ctx.idempotency_key.encode()).hexdigest()[:12]
    return {"charged": ctx.input["total"], "receipt": f"rcpt-{receipt}"}


@node("score-fraud")
def score_fraud(ctx: NodeContext) -> float:
    """A toy risk score: big orders are riskier."""
    return 0.9 if ctx.input["total"] > 1000 else 0.1


@node("decide")
def decide(ctx: NodeContext) -> NodeResult:
    """Ship when in stock, paid and low-risk; otherwise hold for a human."""
    arrivals = ctx.input
    ok = arrivals["check_inventory"]["inStock"] and arrivals["score_fraud"] < 0.5
    return NodeResult(output={"charged": arrivals["charge_payment"]["charged"]}, action="ship" if ok else "review")


@node("ship")
def ship(ctx: NodeContext) -> dict[str, Any]:
    """Book a shipment."""
    tracking = hashlib.sha256(ctx.run_id.encode()).hexdigest()[:10].upper()
    ctx.context.set("shipment", {"carrier": "contoso-post", "tracking": f"CP{tracking}"})
    return {"shipped": True}


@node("hold-for-review")
def hold_for_review(ctx: NodeContext) -> dict[str, Any]:
    """Park the order for a human reviewer."""
    return {"shipped": False, "queue": "fraud-review"}


@node("notify-customer")
def notify_customer(ctx: NodeContext) -> str:
    """Tell the customer what happened (the join runs with whichever branch was taken)."""
    outcome = next(iter(ctx.input.values()))
    return "Your order is on its way." if outcome["shipped"] else "Your order is being reviewed."
