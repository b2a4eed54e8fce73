"""The language guide's examples (examples/language/, shown in docs/language/) do what the guide says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import examples.language.nodes  # noqa: F401 - registers the examples' nodes
from flowcraft_celery.local.runner import LocalRunner, RunResult
from flowcraft_celery.model.catalog import Catalog, read_blueprint_file

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "language"
DOCS = Path(__file__).resolve().parents[3] / "docs" / "language"


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


@pytest.mark.parametrize(("target", "passes", "merged"), [(2, 2, {"hit": "found: 2"}), (9, 5, {"check": None}),
                                                       (0, 5, {"check": None})])
def test_a_side_exit_leaves_the_loop_and_its_merge_runs_once(target: int, passes: int,
                                                             merged: dict[str, Any]) -> None:
    _, result = run("side-exit", {"target": target})
    assert result.status == "completed", result.errors
    assert result.context["counter"] == passes
    assert result.context["finished"] == merged
    assert ("found" in result.context) == ("hit" in merged)


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


def test_dynamic_nodes_join_their_gather_node() -> None:
    _, result = run("dynamic", {"hosts": ["db", "web", "cache"]})
    assert result.status == "completed"
    assert result.context["report"] == ["db: up", "web: up", "cache: up"]
    assert {k for k in mine(result) if k.startswith("check_")} == {"check_0", "check_1", "check_2"}


def _code_blocks(page: Path, lang: str) -> list[str]:
    text = page.read_text(encoding="utf-8")
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)


def _squeezed(text: str) -> str:
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_every_python_example_of_the_guide_is_code_of_an_example_file(page: Path) -> None:
    """What the guide shows is what the tests run: each line of a Python block (imports aside) is
    in examples/language/."""
    code = _squeezed("".join(p.read_text(encoding="utf-8") for p in EXAMPLES.rglob("*.py")))
    for block in _code_blocks(page, "python"):
        for line in block.splitlines():
            if line.strip() and not line.startswith(("import ", "from ")):
                assert _squeezed(line) in code, f"{page.name}: {line.strip()!r} is in no example file"


@pytest.mark.parametrize(("amount", "key"), [(1500, "manual"), (120, "quick"), (20, "accepted")])
def test_conditions_read_the_result_of_the_node_they_leave(amount: int, key: str) -> None:
    _, result = run("conditions", {"order": {"amount": amount}})
    assert result.status == "completed"
    assert [k for k in ("manual", "quick", "accepted") if k in result.context] == [key]
    if key == "accepted":
        assert result.context["accepted"] == amount  # the transform handed over only the amount


def test_a_webhook_waits_for_its_url_to_be_called() -> None:
    runner, result = run("webhook", {})
    assert result.status == "awaiting"
    url = result.context["_webhooks.payment_confirmed"]
    assert url.startswith(f"http://127.0.0.1:8080/webhooks/{result.run_id}/payment_confirmed/0/")
    paid = runner.deliver_webhook(result.run_id, "payment_confirmed", url.rsplit("/", 1)[1], {"paid": True}, "paid")
    assert paid.status == "completed"
    assert paid.context["shipped"] == {"url": url, "body": {"paid": True}} and "refunded" not in paid.context


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_every_json_example_of_the_guide_is_part_of_an_example_file(page: Path) -> None:
    """Each JSON block (but the format's outline, marked by `…`) is text of examples/language/."""
    files = _squeezed("".join(p.read_text(encoding="utf-8") for p in EXAMPLES.rglob("*.json")))
    for block in _code_blocks(page, "json"):
        if "…" not in block:
            assert _squeezed(block) in files, f"{page.name}: {block[:80]!r} is in no example file"
