"""Loop iterations reach every node of a loop's body (SPEC §3.8): off-cycle side branches,
dynamic nodes and batches run once per pass with that pass's data."""

from __future__ import annotations

from typing import Any

import pytest

from flowcraft_celery.engine import semantics
from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.registry import NodeResult, Registry
from flowcraft_celery.local.runner import LocalRunner
from flowcraft_celery.model.blueprint import EdgeDefinition
from flowcraft_celery.model.builder import Flow
from flowcraft_celery.model.graph import DynamicAddition, DynamicNodeError, Graph
from flowcraft_celery.model.json_values import NotJsonError


class Calls:
    """Registry of test nodes that log (node, iteration, input)."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.log: list[tuple[str, int, Any]] = []
        reg = self.registry.register

        def incr(ctx: NodeContext) -> int:
            self.log.append((ctx.node_id, ctx.iteration, ctx.input))
            value = ctx.context.get("count", 0) + 1
            ctx.context.set("count", value)
            return value

        def echo(ctx: NodeContext) -> Any:
            self.log.append((ctx.node_id, ctx.iteration, ctx.input))
            return ctx.input

        def spawn(ctx: NodeContext) -> NodeResult:
            self.log.append((ctx.node_id, ctx.iteration, ctx.input))
            nodes = [{"id": f"{ctx.node_id}_{i}", "uses": "echo", "input": ctx.input * 10 + i}
                     for i in range(ctx.input)]
            return NodeResult(output=ctx.input, dynamic_nodes=nodes)

        reg("incr", incr)
        reg("echo", echo)
        reg("spawn", spawn)
        reg("zero", lambda ctx: ctx.context.set("count", 0))

    def of(self, node_id: str) -> list[tuple[int, Any]]:
        return [(it, value) for n, it, value in self.log if n == node_id]


def loop(limit: int) -> Flow:
    return (Flow("lp").node("init", "zero")
            .node("ctl", "loop-controller", params={"condition": f"count < {limit}"}, join="any")
            .node("body", "incr").node("done", "echo")
            .edge("init", "ctl").edge("ctl", "body", action="continue").edge("body", "ctl")
            .edge("ctl", "done", action="break"))


def test_body_includes_off_cycle_nodes_but_not_the_exit_or_outside_joins() -> None:
    flow = (loop(3).node("side", "echo").node("tail", "echo").node("outside", "echo").node("j", "echo")
            .edge("body", "side").edge("side", "tail").edge("init", "outside").edge("outside", "j").edge("side", "j"))
    graph = Graph(flow.build())
    assert graph.bodies["ctl"] == frozenset({"body", "side", "tail"})
    assert semantics.target_iteration(graph, EdgeDefinition("body", "side"), 2) == 2
    assert semantics.target_iteration(graph, EdgeDefinition("body", "ctl"), 2) == 3
    assert semantics.target_iteration(graph, EdgeDefinition("ctl", "done", action="break"), 2) == 0
    assert semantics.target_iteration(graph, EdgeDefinition("side", "j"), 2) == 0


def test_off_cycle_side_branch_runs_each_iteration_with_that_iterations_input() -> None:
    calls = Calls()
    flow = loop(3).node("side", "echo").node("tail", "echo").edge("body", "side").edge("side", "tail")
    result = LocalRunner(calls.registry).run(flow.build())
    assert result.status == "completed", result.errors
    assert calls.of("side") == [(0, 1), (1, 2), (2, 3)]
    assert calls.of("tail") == [(0, 1), (1, 2), (2, 3)]
    assert result.context["_outputs.tail"] == 3


def test_a_join_with_the_outside_runs_once() -> None:
    calls = Calls()
    flow = (loop(3).node("outside", "echo").node("j", "echo")
            .edge("init", "outside").edge("outside", "j").edge("body", "j"))
    result = LocalRunner(calls.registry).run(flow.build())
    assert result.status == "completed", result.errors
    assert len(calls.of("j")) == 1


def test_dynamic_nodes_run_in_every_pass_with_that_pass_inputs() -> None:
    calls = Calls()
    flow = (loop(3).node("sp", "spawn").node("after", "echo").edge("body", "sp").edge("sp", "after"))
    result = LocalRunner(calls.registry).run(flow.build())
    assert result.status == "completed", result.errors
    assert calls.of("sp_0") == [(0, 10), (1, 20), (2, 30)]
    assert calls.of("sp_1") == [(1, 21), (2, 31)]
    assert calls.of("sp_2") == [(2, 32)]


def test_additions_keep_each_iterations_inputs_whatever_their_order() -> None:
    blueprint = Flow("d").node("p", "spawn").build()
    first = DynamicAddition.from_result("p", [{"id": "p_0", "uses": "echo", "input": "first"}], None, 0)
    second = DynamicAddition.from_result("p", [{"id": "p_0", "uses": "echo", "input": "second"}], None, 1)
    for order in ([first, second], [second, first]):
        graph = Graph(blueprint).extend(order)
        assert graph.fixed_input("p_0", 0) == (True, "first")
        assert graph.fixed_input("p_0", 1) == (True, "second")


def test_dynamic_edges_exist_only_in_their_iteration() -> None:
    blueprint = Flow("d").node("p", "spawn").node("g", "echo").edge("p", "g").build()
    three = DynamicAddition.from_result("p", [{"id": f"p_{i}", "uses": "echo"} for i in range(3)],
                                        {"gatherNodeId": "g"}, 0)
    one = DynamicAddition.from_result("p", [{"id": "p_0", "uses": "echo"}], {"gatherNodeId": "g"}, 1)
    graph = Graph(blueprint).extend([three, one])
    assert graph.predecessors("g", 0) == ["p", "p_0", "p_1", "p_2"]
    assert graph.predecessors("g", 1) == ["p", "p_0"]


def test_a_dynamic_node_cannot_take_a_blueprint_nodes_id() -> None:
    blueprint = Flow("d").node("p", "spawn").node("g", "echo").build()
    with pytest.raises(DynamicNodeError, match="'g'"):
        Graph(blueprint).extend([DynamicAddition.from_result("p", [{"id": "g", "uses": "echo"}], None)])


def test_batch_in_a_loop_gathers_each_pass_own_items() -> None:
    calls = Calls()
    calls.registry.register("plus", lambda ctx: ctx.input + 100)
    flow = (loop(2).node("sc", "batch-scatter", params={"workerUsesKey": "plus", "gatherNodeId": "ga"})
            .node("ga", "batch-gather", params={"gatherNodeId": "ga", "outputKey": "got"})
            .edge("body", "sc", transform="input === 1 ? [1, 2, 3] : [input]").edge("sc", "ga"))
    runner = LocalRunner(calls.registry)
    result = runner.run(flow.build())
    assert result.status == "completed", result.errors
    assert result.context["got"] == [102]
    assert runner.contexts.get_output(result.run_id, "ga", 0).output == [101, 102, 103]  # type: ignore[union-attr]


def test_empty_batch_gathers_an_empty_list() -> None:
    flow = (Flow("e").node("sc", "batch-scatter", inputs="items", params={"workerUsesKey": "echo",
                                                                        "gatherNodeId": "ga"})
            .node("ga", "batch-gather", params={"gatherNodeId": "ga", "outputKey": "got"}).edge("sc", "ga"))
    result = LocalRunner(Calls().registry).run(flow.build(), {"items": []})
    assert result.status == "completed"
    assert result.context["got"] == [] == result.context["_outputs.ga"]


def test_bounded_cycle_fails_the_run_past_its_bound() -> None:
    calls = Calls()
    flow = Flow("c", maxIterations=4).node("a", "incr").node("b", "echo").edge("a", "b").edge("b", "a")
    result = LocalRunner(calls.registry).run(flow.build())
    assert result.status == "failed"
    assert "maxIterations of 4" in result.errors[0]["message"]
    assert len(calls.of("a")) == 4


def test_nested_loops_run_the_inner_loop_fully_in_each_outer_pass() -> None:
    registry = Registry()
    log: list[str] = []

    def step(ctx: NodeContext) -> None:
        log.append(ctx.node_id)
        key = ctx.params["key"]
        ctx.context.set(key, ctx.context.get(key, 0) + 1)
        if key == "outer":
            ctx.context.set("inner", 0)

    registry.register("step", step)
    flow = (Flow("n").node("init", "step", params={"key": "outer"}).edge("init", "o")
            .node("o", "loop-controller", params={"condition": "outer < 3"}, join="any")
            .node("ob", "step", params={"key": "outer"})
            .node("i", "loop-controller", params={"condition": "inner < 3"}, join="any")
            .node("ib", "step", params={"key": "inner"}).node("end", "step", params={"key": "ends"})
            .edge("o", "ob", action="continue").edge("ob", "i").edge("i", "ib", action="continue").edge("ib", "i")
            .edge("i", "o", action="break").edge("o", "end", action="break"))
    result = LocalRunner(registry).run(flow.build())
    assert result.status == "completed", result.errors
    assert log.count("ib") == 6 and log.count("ob") == 2 and log.count("end") == 1


def test_node_output_json_cannot_carry_fails_the_node_without_retry() -> None:
    attempts: list[int] = []

    def nan(ctx: NodeContext) -> float:
        attempts.append(ctx.attempt)
        return float("nan")

    registry = Registry()
    registry.register("nan", nan)
    result = LocalRunner(registry).run(Flow("x").node("a", "nan", max_retries=3).build())
    assert result.status == "failed"
    assert "NaN" in result.errors[0]["message"] and attempts == [1]


def test_context_write_json_cannot_carry_fails_the_node() -> None:
    registry = Registry()
    registry.register("big", lambda ctx: ctx.context.set("n", 2 ** 64 + 1))
    result = LocalRunner(registry).run(Flow("x").node("a", "big").build())
    assert result.status == "failed"
    assert "context key 'n'" in result.errors[0]["message"] and "2^53" in result.errors[0]["message"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 2 ** 53 + 1, -(10 ** 400), {"a": [1, {2}]}])
def test_start_refuses_values_json_cannot_carry(value: Any) -> None:
    with pytest.raises(NotJsonError, match="initial context"):
        LocalRunner(Calls().registry).run(Flow("x").node("a", "echo").build(), {"v": value})
