"""Decided once (SPEC §3.2): a node execution's routing is recorded with its output and replayed as is."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from flowcraft_celery.engine import semantics
from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.decisions import Decision
from flowcraft_celery.engine.frontier import frontier
from flowcraft_celery.engine.registry import NodeResult, Registry
from flowcraft_celery.local.runner import LocalRunner
from flowcraft_celery.model.builder import Flow
from flowcraft_celery.model.graph import Graph
from flowcraft_celery.stores.base import MISSING, RecordedOutput
from flowcraft_celery.stores.memory import MemoryContextStore


def registry() -> Registry:
    nodes = Registry()

    @nodes.node("echo")
    def echo(ctx: NodeContext) -> Any:
        return ctx.node_id

    @nodes.node("raise-flag")
    def raise_flag(ctx: NodeContext) -> str:
        ctx.context.set("flag", True)
        return ctx.node_id

    return nodes


def gated_flow() -> Flow:
    """`a` goes to `never` only when `flag` is true (it is false then); `setter` makes it true later."""
    return (Flow("gated").node("a", "echo").node("never", "echo").node("setter", "raise-flag").node("last", "echo")
            .edge("a", "never", condition="flag === true").edge("a", "setter").edge("setter", "last"))


def run_gated() -> tuple[Graph, dict[tuple[str, int], RecordedOutput], dict[str, Any]]:
    store = MemoryContextStore()
    result = LocalRunner(registry(), context_store=store).run(gated_flow().build(), {"flag": False})
    assert result.status == "completed", result.errors
    outputs = {(o.node_id, o.iteration): o for o in store.outputs(result.run_id)}
    return Graph(gated_flow().build()), outputs, result.context


def test_replay_follows_the_recorded_decision_not_the_current_context() -> None:
    graph, outputs, context = run_gated()
    assert context["flag"] is True and ("never", 0) not in outputs
    replay = frontier(graph, "r", outputs, None, lambda key: context.get(key, MISSING))
    assert replay.complete and not replay.pending
    # a record without its decision (an older version's) is decided again, against today's context
    legacy = {k: dataclasses.replace(v, decision=None) for k, v in outputs.items()}
    redecided = frontier(graph, "r", legacy, None, lambda key: context.get(key, MISSING))
    assert list(redecided.pending) == ["never@0"]


def test_each_output_is_recorded_with_the_edges_its_node_took() -> None:
    _, outputs, _ = run_gated()
    assert outputs[("a", 0)].decision == {"node": "a", "taken": [1]}  # `setter`, not `never`
    assert outputs[("setter", 0)].decision == {"node": "setter", "taken": [0]}
    assert outputs[("last", 0)].decision == {"node": "last", "taken": []}


def test_a_decision_sees_its_own_nodes_output_and_keeps_transformed_values() -> None:
    flow = (Flow("own").node("a", "echo").node("yes", "echo").node("no", "echo")
            .edge("a", "yes", condition="a === 'a'", transform="context.n + 1").edge("a", "no", condition="a !== 'a'"))
    graph = Graph(flow.build())
    decision = semantics.decide(graph, "a", 0, NodeResult(output="a"), lambda key: 41 if key == "n" else MISSING)
    assert decision == Decision("a", (0,), {0: 42})
    assert Decision.from_dict(decision.to_dict()) == decision
    transitions = semantics.after_decision(graph, 0, "a", decision)
    assert [(t.target, t.skipped, t.value) for t in transitions] == [("yes", False, 42), ("no", True, None)]


def test_a_decision_naming_edges_the_node_does_not_have_is_an_error_naming_it() -> None:
    graph = Graph(gated_flow().build())
    with pytest.raises(semantics.DecisionMismatchError, match="node 'last'"):
        semantics.after_decision(graph, 0, None, Decision("last", (3,)))
