"""Validation before a run starts (SPEC §7): one code per problem, all problems at once, each named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowcraft_celery.engine.registry import Registry
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.catalog import load_blueprints
from flowcraft_celery.model.validation import (
    BlueprintValidationError,
    ValidationIssue,
    validate,
    validate_or_raise,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "blueprints"


def _noop(ctx: Any) -> None:
    """A node body that does nothing."""


def registry(*uses: str) -> Registry:
    """A fresh registry with a no-op implementation per `uses`."""
    out = Registry()
    for name in uses:
        out.register(name, _noop)
    return out


def bp(nodes: list[dict[str, Any]], edges: list[dict[str, Any]] | None = None, **extra: Any) -> Blueprint:
    """A blueprint from node and edge dicts."""
    return Blueprint.from_dict({"id": "t", "nodes": nodes, "edges": edges or [], **extra})


def codes(issues: list[ValidationIssue]) -> list[str]:
    return [i.code for i in issues]


def only(issues: list[ValidationIssue], code: str) -> ValidationIssue:
    """The single issue with this code (fails if there are none or several)."""
    found = [i for i in issues if i.code == code]
    assert len(found) == 1, issues
    return found[0]


def n(node_id: str, uses: str = "work", **fields: Any) -> dict[str, Any]:
    return {"id": node_id, "uses": uses, **fields}


def e(source: str, target: str, **fields: Any) -> dict[str, Any]:
    return {"source": source, "target": target, **fields}


def test_clean_chain_has_no_issue() -> None:
    assert validate(bp([n("a"), n("b")], [e("a", "b")]), registry("work")) == []


def test_duplicate_node_id() -> None:
    issue = only(validate(bp([n("a"), n("a"), n("b")])), "DUPLICATE_NODE_ID")
    assert issue.severity == "error"
    assert issue.node_id == "a"
    assert "'a'" in issue.message


def test_invalid_edge_source() -> None:
    issue = only(validate(bp([n("a")], [e("ghost", "a")])), "INVALID_EDGE_SOURCE")
    assert issue.edge == "ghost -> a"
    assert "ghost" in issue.message and "edges[0]" in issue.message


def test_invalid_edge_target() -> None:
    issue = only(validate(bp([n("a")], [e("a", "ghost")])), "INVALID_EDGE_TARGET")
    assert issue.edge == "a -> ghost"
    assert "ghost" in issue.message


def test_missing_node_implementation_only_when_registry_known() -> None:
    blueprint = bp([n("a", "known"), n("b", "unknown")], [e("a", "b")])
    issue = only(validate(blueprint, registry("known")), "MISSING_NODE_IMPLEMENTATION")
    assert issue.node_id == "b"
    assert "'unknown'" in issue.message
    assert validate(blueprint) == []


def test_validating_one_blueprint_again_finds_every_issue_again() -> None:
    """The document's own checks are done once per blueprint object (each start validates it);
    a second validation still reports them, beside the lookups of the registry it is given."""
    blueprint = bp([n("a", "known"), n("a", "known"), n("b", "unknown")], [e("a", "b"), e("b", "ghost")])
    first = validate(blueprint, registry("known"))
    assert codes(first) == ["DUPLICATE_NODE_ID", "INVALID_EDGE_TARGET", "MISSING_NODE_IMPLEMENTATION"]
    assert validate(blueprint, registry("known")) == first
    assert codes(validate(blueprint, registry("known", "unknown"))) == ["DUPLICATE_NODE_ID", "INVALID_EDGE_TARGET"]


def test_builtins_need_no_registration() -> None:
    blueprint = bp([n("w", "wait"), n("s", "sleep", params={"duration": "1s"})], [e("w", "s")])
    assert validate(blueprint, registry()) == []


def test_invalid_batch_worker_key() -> None:
    blueprint = bp([n("s", "batch-scatter", params={"workerUsesKey": "missing", "gatherNodeId": "g"}),
                    n("g", "batch-gather", params={"gatherNodeId": "g"})], [e("s", "g")])
    issue = only(validate(blueprint, registry("work")), "INVALID_BATCH_WORKER_KEY")
    assert issue.node_id == "s"
    assert "workerUsesKey" in issue.message and "'missing'" in issue.message


def test_batch_worker_key_must_be_a_string_even_without_registry() -> None:
    blueprint = bp([n("s", "batch-scatter", params={"gatherNodeId": "g"}),
                    n("g", "batch-gather", params={"gatherNodeId": "g"})], [e("s", "g")])
    assert "INVALID_BATCH_WORKER_KEY" in codes(validate(blueprint))


def test_batch_gather_node_must_exist() -> None:
    blueprint = bp([n("s", "batch-scatter", params={"workerUsesKey": "work", "gatherNodeId": "nowhere"})])
    issue = only(validate(blueprint, registry("work")), "INVALID_CONFIG")
    assert "gatherNodeId" in issue.message and "nowhere" in issue.message


def test_invalid_subflow_blueprint_id() -> None:
    blueprint = bp([n("sub", "subflow", params={"blueprintId": "child"})])
    issue = only(validate(blueprint, None, {"other": object()}), "INVALID_SUBFLOW_BLUEPRINT_ID")
    assert issue.node_id == "sub"
    assert "'child'" in issue.message
    assert validate(blueprint, None, {"child": object()}) == []


def test_subflow_without_blueprint_id_is_invalid() -> None:
    assert "INVALID_SUBFLOW_BLUEPRINT_ID" in codes(validate(bp([n("sub", "subflow")])))


def test_invalid_expression_in_edge_condition() -> None:
    issue = only(validate(bp([n("a"), n("b")], [e("a", "b", condition="result.output ===")])),
                 "INVALID_EXPRESSION")
    assert issue.edge == "a -> b"
    assert "condition" in issue.message and "result.output ===" in issue.message


def test_invalid_expression_in_edge_transform() -> None:
    issue = only(validate(bp([n("a"), n("b")], [e("a", "b", transform="input.(x")])), "INVALID_EXPRESSION")
    assert issue.edge == "a -> b"
    assert "transform" in issue.message and "input.(x" in issue.message


def test_invalid_expression_in_loop_controller_condition() -> None:
    blueprint = bp([n("ctl", "loop-controller", params={"condition": "count <"}), n("body")],
                   [e("ctl", "body", action="continue"), e("body", "ctl")])
    issue = only(validate(blueprint), "INVALID_EXPRESSION")
    assert issue.node_id == "ctl"
    assert "params.condition" in issue.message and "count <" in issue.message


def test_loop_controller_without_condition_is_invalid_expression() -> None:
    blueprint = bp([n("ctl", "loop-controller"), n("body")], [e("ctl", "body", action="continue"), e("body", "ctl")])
    assert only(validate(blueprint), "INVALID_EXPRESSION").node_id == "ctl"


@pytest.mark.parametrize(("config", "words"), [
    ({"maxRetries": 0}, "maxRetries"),
    ({"maxRetries": -2}, "maxRetries"),
    ({"retryDelay": -1}, "retryDelay"),
    ({"timeout": 0}, "timeout"),
    ({"joinStrategy": "some"}, "joinStrategy"),
    ({"fallback": "nobody"}, "fallback"),
    ({"fallback": "a"}, "fallback"),
    ({"queue": "  "}, "queue"),
])
def test_invalid_config(config: dict[str, Any], words: str) -> None:
    issue = only(validate(bp([n("a", config=config), n("b")], [e("a", "b")])), "INVALID_CONFIG")
    assert issue.node_id == "a"
    assert "'a'" in issue.message and f"config.{words}" in issue.message


def test_valid_config_is_clean() -> None:
    config = {"maxRetries": 1, "retryDelay": 0, "timeout": 10, "joinStrategy": "any", "fallback": "b", "queue": "q"}
    assert validate(bp([n("a", config=config), n("b")])) == []


def test_invalid_sleep_duration_is_invalid_config() -> None:
    for duration in ("soon", -5, "5 weeks", None):
        issue = only(validate(bp([n("z", "sleep", params={"duration": duration})])), "INVALID_CONFIG")
        assert issue.node_id == "z" and "duration" in issue.message


def test_cycle_entry_points_must_name_nodes() -> None:
    blueprint = bp([n("a"), n("b")], [e("a", "b"), e("b", "a")], metadata={"cycleEntryPoints": ["zz"]})
    assert "zz" in only(validate(blueprint), "INVALID_CONFIG").message


def test_loop_without_continue_edge() -> None:
    blueprint = bp([n("start"), n("ctl", "loop-controller", params={"condition": "x < 3"}), n("body")],
                   [e("start", "ctl"), e("ctl", "body", action="go"), e("body", "ctl")])
    issue = only(validate(blueprint), "LOOP_WITHOUT_CONTINUE_EDGE")
    assert issue.node_id == "ctl" and "continue" in issue.message


def test_orphan_node_is_a_warning() -> None:
    blueprint = bp([n("a"), n("b"), n("x"), n("y")], [e("a", "b"), e("x", "y"), e("y", "x")],
                   metadata={"maxIterations": 3})
    issues = validate(blueprint)
    orphans = [i for i in issues if i.code == "ORPHAN_NODE"]
    assert {i.node_id for i in orphans} == {"x", "y"}
    assert all(i.severity == "warning" for i in orphans)
    assert validate_or_raise(blueprint) == issues


def test_fallback_node_is_not_an_orphan() -> None:
    blueprint = bp([n("a", config={"fallback": "b"}), n("b"), n("c")], [e("a", "c")])
    assert validate(blueprint) == []


def test_no_start_node_for_empty_blueprint() -> None:
    assert codes(validate(bp([]))) == ["NO_START_NODE"]


def test_cycle_without_any_start_uses_its_first_node() -> None:
    assert validate(bp([n("a"), n("b")], [e("a", "b"), e("b", "a")], metadata={"maxIterations": 3})) == []


def test_no_start_node_when_only_node_is_a_fallback() -> None:
    blueprint = bp([n("a", config={"fallback": "b"}), n("b", config={"fallback": "a"})])
    assert "NO_START_NODE" in codes(validate(blueprint))


def test_a_fallback_chain_that_comes_back_is_invalid() -> None:
    blueprint = bp([n("s", config={"fallback": "b"}), n("b", config={"fallback": "c"}),
                    n("c", config={"fallback": "b"})])
    [issue] = [i for i in validate(blueprint) if i.code == "INVALID_CONFIG"]
    assert issue.node_id == "b" and "b -> c -> b" in issue.message
    chain = bp([n("s", config={"fallback": "b"}), n("b", config={"fallback": "c"}), n("c")])
    assert validate(chain) == []


def test_every_problem_is_reported_at_once() -> None:
    blueprint = bp(
        [n("a", "unknown", config={"maxRetries": 0}), n("a"), n("b", config={"joinStrategy": "first"}),
         n("s", "subflow", params={"blueprintId": "gone"})],
        [e("a", "ghost"), e("phantom", "b"), e("a", "b", condition="&&")],
    )
    found = codes(validate(blueprint, registry("work"), {}))
    for code in ("DUPLICATE_NODE_ID", "INVALID_EDGE_TARGET", "INVALID_EDGE_SOURCE", "INVALID_EXPRESSION",
                 "MISSING_NODE_IMPLEMENTATION", "INVALID_SUBFLOW_BLUEPRINT_ID"):
        assert code in found
    assert found.count("INVALID_CONFIG") == 2


def test_validate_or_raise_carries_every_error() -> None:
    blueprint = bp([n("a"), n("a")], [e("a", "ghost")])
    with pytest.raises(BlueprintValidationError) as info:
        validate_or_raise(blueprint)
    assert codes(info.value.issues) == ["DUPLICATE_NODE_ID", "INVALID_EDGE_TARGET"]
    assert "DUPLICATE_NODE_ID" in str(info.value) and "ghost" in str(info.value)
    assert info.value.blueprint_id == "t"


def test_issue_json_form_names_node_and_edge() -> None:
    issues = validate(bp([n("a"), n("a")], [e("a", "ghost")]))
    assert [i.to_dict() for i in issues] == [
        {"code": "DUPLICATE_NODE_ID", "message": issues[0].message, "severity": "error", "nodeId": "a"},
        {"code": "INVALID_EDGE_TARGET", "message": issues[1].message, "severity": "error", "edge": "a -> ghost"},
    ]


EXAMPLE_USES = ("draft", "write", "check", "route", "publish")


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.stem)
def test_example_blueprints_validate_clean(path: Path) -> None:
    siblings = load_blueprints([str(EXAMPLES)])
    assert validate(Blueprint.load(path), registry(*EXAMPLE_USES), siblings) == []


def test_example_subflow_without_its_sibling_is_invalid() -> None:
    siblings = {k: v for k, v in load_blueprints([str(EXAMPLES)]).items() if k != "escalate"}
    issue = only(validate(Blueprint.load(EXAMPLES / "support.json"), registry(*EXAMPLE_USES), siblings),
                 "INVALID_SUBFLOW_BLUEPRINT_ID")
    assert issue.node_id == "escalate_ticket"


def test_example_blueprint_without_registry_entries_names_each_missing_use() -> None:
    issues = validate(Blueprint.load(EXAMPLES / "escalate.json"), registry("publish"))
    assert {i.code for i in issues} == {"MISSING_NODE_IMPLEMENTATION"}
    assert all("write" in i.message for i in issues)
