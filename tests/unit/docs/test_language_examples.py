"""The language guide's examples (examples/language/, shown in docs/language/) do what the guide says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import examples.language.nodes  # noqa: F401 - registers the examples' nodes
from flowcraft_celery.local.runner import LocalRunner, RunResult
from flowcraft_celery.model.catalog import Catalog, read_blueprint_file

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "language"


def run(name: str, context: dict[str, Any]) -> tuple[LocalRunner, RunResult]:
    runner = LocalRunner(blueprints=Catalog([str(EXAMPLES)]))
    return runner, runner.run(read_blueprint_file(EXAMPLES / f"{name}.json"), context)


def mine(result: RunResult) -> dict[str, Any]:
    """The context without the engine's `_outputs.*` keys."""
    return {k: v for k, v in result.context.items() if not k.startswith("_")}


@pytest.mark.parametrize(("amount", "tier", "expected"), [
    (120, "gold", {"reviewed": "risk high", "vip": "vip: done: reviewed: risk high"}),
    (20, "gold", {"accepted": 20}),
    (120, "silver", {"reviewed": "risk high"}),
])
def test_routing_by_action_condition_and_transform(amount: int, tier: str, expected: dict[str, Any]) -> None:
    _, result = run("routing", {"order": {"amount": amount}, "customer": {"tier": tier}})
    assert result.status == "completed"
    context = mine(result)
    for key in ("accepted", "reviewed", "vip"):
        assert context.get(key) == expected.get(key), key


def test_the_loop_runs_its_body_until_the_condition_fails() -> None:
    _, result = run("loop", {"limit": 3})
    assert result.status == "completed"
    assert result.context["counter"] == 3 and result.context["finished"] is None
    assert result.context["body"] == 3  # the latest iteration's output


def test_batch_items_come_back_in_item_order() -> None:
    _, result = run("batch", {"numbers": [1, 2, 3, 4, 5]})
    assert result.status == "completed"
    assert result.context["squares"] == [1, 4, 9, 16, 25]


def test_retries_fallback_node_and_class_fallback() -> None:
    _, result = run("failures", {"price": 0})
    assert result.status == "completed" and result.errors == []
    assert result.context["call_service"] == "ok after 3 attempts"
    assert result.context["pay"] == "queued for manual payment"
    assert result.context["charge"] == {"charged": 0, "reason": "nothing to charge"}
    assert "gift" in result.context and "receipt" not in result.context
    _, paid = run("failures", {"price": 2.5})
    assert paid.context["charge"]["charged"] == 250 and "receipt" in paid.context


@pytest.mark.parametrize(("action", "key"), [("approve", "archived"), ("reject", "rejected")])
def test_subflow_then_wait_then_resume(action: str, key: str) -> None:
    runner, result = run("order", {"address": "1 Main St"})
    assert result.status == "awaiting"
    assert result.context["tracking"] == "pickup: label: 1 Main St"
    resumed = runner.resume(result.run_id, action, {"by": "lee"})
    assert resumed.status == "completed"
    assert resumed.context[key] == {"by": "lee"}
