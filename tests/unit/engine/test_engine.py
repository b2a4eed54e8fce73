"""Workflow semantics of SPEC §3 and §6, through the engine's pure functions and the LocalRunner."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from flowcraft_celery.engine import semantics
from flowcraft_celery.engine.builtins import batch_gather
from flowcraft_celery.engine.context import NodeContext, RunContext
from flowcraft_celery.engine.registry import Node, NodeResult, Registry
from flowcraft_celery.local.runner import LocalRunner, RunResult
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.builder import Flow
from flowcraft_celery.model.durations import sleep_seconds
from flowcraft_celery.model.graph import Graph, start_nodes
from flowcraft_celery.model.validation import BlueprintValidationError
from flowcraft_celery.stores.base import MISSING, JoinState
from flowcraft_celery.stores.memory import MemoryContextStore


class Kit:
    """A fresh registry with common test nodes, and a log of who ran with what."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.calls: list[tuple[str, Any]] = []
        self.contexts: dict[str, list[NodeContext]] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []
        node = self.registry.node

        @node("echo")
        def echo(ctx: NodeContext) -> Any:
            self.seen(ctx)
            return ctx.input

        @node("const")
        def const(ctx: NodeContext) -> NodeResult:
            self.seen(ctx)
            return NodeResult(output=ctx.params.get("output"), action=ctx.params.get("action"))

        @node("incr")
        def incr(ctx: NodeContext) -> int:
            self.seen(ctx)
            value = ctx.context.get("count", 0) + 1
            ctx.context.set("count", value)
            return value

        @node("set")
        def set_key(ctx: NodeContext) -> Any:
            self.seen(ctx)
            ctx.context.set(ctx.params["key"], ctx.params["value"])
            return ctx.params["value"]

        @node("flaky")
        def flaky(ctx: NodeContext) -> Any:
            self.seen(ctx)
            if ctx.attempt <= ctx.params.get("fail", 0):
                raise RuntimeError(f"boom {ctx.node_id}")
            return ctx.params.get("output", ctx.input)

        @node("fail")
        def fail(ctx: NodeContext) -> Any:
            self.seen(ctx)
            raise RuntimeError(f"boom {ctx.node_id}")

    def seen(self, ctx: NodeContext) -> None:
        """Log an invocation."""
        self.calls.append((ctx.node_id, ctx.input))
        self.contexts.setdefault(ctx.node_id, []).append(ctx)

    def count(self, node_id: str) -> int:
        """How many times a node's implementation was invoked."""
        return sum(1 for n, _ in self.calls if n == node_id)

    def ran(self) -> set[str]:
        return {n for n, _ in self.calls}

    def runner(self, blueprints: dict[str, Blueprint] | None = None, **kwargs: Any) -> LocalRunner:
        return LocalRunner(self.registry, blueprints, on_event=lambda name, data: self.events.append((name, data)),
                           **kwargs)

    def run(self, blueprint: Blueprint | Flow, context: dict[str, Any] | None = None) -> RunResult:
        built = blueprint.build() if isinstance(blueprint, Flow) else blueprint
        return self.runner().run(built, context)

    def event_names(self, node_id: str | None = None) -> list[str]:
        return [name for name, data in self.events if node_id is None or data.get("nodeId") == node_id]


@pytest.fixture
def kit() -> Kit:
    return Kit()


def graph(flow: Flow) -> Graph:
    return Graph(flow.build())


def lookup_of(values: dict[str, Any]) -> semantics.Lookup:
    return lambda key: values.get(key, MISSING)


def out(result: RunResult, node_id: str) -> Any:
    return result.context[semantics.output_key(node_id)]


# -- 3.1 start nodes -------------------------------------------------------------------------


def test_start_nodes_are_nodes_without_incoming_edges() -> None:
    g = graph(Flow("s").node("a", "echo").node("b", "echo").node("c", "echo").edge("a", "c").edge("b", "c"))
    assert start_nodes(g) == ["a", "b"]


def test_fallback_targets_are_not_start_nodes(kit: Kit) -> None:
    flow = Flow("s").node("a", "fail", fallback="spare").node("spare", "const", params={"output": 1})
    assert start_nodes(graph(flow)) == ["a"]
    result = kit.run(Flow("s").node("a", "echo", fallback="spare").node("spare", "const"))
    assert result.status == "completed"
    assert "spare" not in kit.ran()


def test_cycle_starts_at_its_entry_point(kit: Kit) -> None:
    flow = (Flow("c", cycleEntryPoints=["b"], maxIterations=10).node("a", "incr").node("b", "incr").node("done", "echo")
            .edge("a", "b").edge("b", "a", condition="count < 4").edge("b", "done", condition="count >= 4"))
    assert start_nodes(graph(flow)) == ["b"]
    result = kit.run(flow)
    assert result.status == "completed"
    assert kit.calls[0][0] == "b"
    assert (out(result, "b"), out(result, "a"), out(result, "done")) == (5, 4, 5)


def test_cycle_without_entry_point_starts_at_its_first_node() -> None:
    flow = Flow("c").node("a", "incr").node("b", "incr").edge("a", "b").edge("b", "a")
    assert start_nodes(graph(flow)) == ["a"]


# -- 3.2 successor choice ----------------------------------------------------------------------


def branch(action: str | None) -> Flow:
    return (Flow("br").node("a", "const", params={"output": "A", "action": action})
            .node("left", "echo").node("right", "echo").node("default", "echo")
            .edge("a", "left", action="left").edge("a", "right", action="right").edge("a", "default"))


def test_action_chooses_its_edges_only(kit: Kit) -> None:
    result = kit.run(branch("right"))
    assert result.status == "completed"
    assert kit.ran() == {"a", "right"}
    assert out(result, "right") == "A"


def test_unmatched_action_takes_the_default_edges(kit: Kit) -> None:
    result = kit.run(branch("sideways"))
    assert result.status == "completed"
    assert kit.ran() == {"a", "default"}


def test_no_action_takes_only_default_edges(kit: Kit) -> None:
    kit.run(branch(None))
    assert kit.ran() == {"a", "default"}


def test_not_taken_edges_are_reported_skipped(kit: Kit) -> None:
    kit.run(branch("left"))
    skipped = {data["nodeId"] for name, data in kit.events if name == "node:skipped"}
    assert skipped == {"right", "default"}


def test_choose_edges_action_with_false_condition_falls_back_to_default() -> None:
    g = graph(Flow("x").node("a", "echo").node("b", "echo").node("c", "echo")
              .edge("a", "b", action="go", condition="result.output > 10").edge("a", "c"))
    taken, skipped = semantics.choose_edges(g, "a", NodeResult(output=3, action="go"), lookup_of({}))
    assert [e.target for e in taken] == ["c"]
    assert [e.target for e in skipped] == ["b"]
    taken, _ = semantics.choose_edges(g, "a", NodeResult(output=30, action="go"), lookup_of({}))
    assert [e.target for e in taken] == ["b"]


def test_loop_controller_conditional_edges_come_first(kit: Kit) -> None:
    flow = (Flow("lc").node("init", "set", params={"key": "count", "value": 0})
            .node("ctl", "loop-controller", params={"condition": "count < 10"}, join="any")
            .node("body", "incr").node("done", "echo")
            .edge("init", "ctl").edge("ctl", "body", action="continue").edge("body", "ctl")
            .edge("ctl", "done", condition="count >= 2"))
    result = kit.run(flow)
    assert result.status == "completed"
    assert kit.count("body") == 2
    assert result.context["count"] == 2
    assert "done" in kit.ran()


def test_conditions_read_result_and_context_keys(kit: Kit) -> None:
    flow = (Flow("cond").node("score", "const", params={"output": {"value": 7}})
            .node("high", "echo").node("low", "echo").node("vip", "echo").node("named", "echo")
            .edge("score", "high", condition="result.output.value > 5")
            .edge("score", "low", condition="result.output.value <= 5")
            .edge("score", "vip", condition="tier === 'gold' && result.output.value > 1")
            .edge("score", "named", condition="score.value === 7"))
    result = kit.run(flow, {"tier": "gold"})
    assert result.status == "completed"
    assert kit.ran() == {"score", "high", "vip", "named"}
    kit.calls.clear()
    kit.run(flow, {"tier": "silver"})
    assert kit.ran() == {"score", "high", "named"}


def test_condition_on_missing_key_is_false_not_an_error(kit: Kit) -> None:
    flow = Flow("m").node("a", "echo").node("b", "echo").edge("a", "b", condition="nothing.here.at.all")
    result = kit.run(flow)
    assert result.status == "completed"
    assert kit.ran() == {"a"}


# -- 3.3 transforms, 3.4 inputs --------------------------------------------------------------


def test_transform_computes_the_target_input(kit: Kit) -> None:
    flow = (Flow("tr").node("a", "const", params={"output": {"value": 4}}).node("b", "echo")
            .edge("a", "b", transform="input.value * context.factor + 1"))
    result = kit.run(flow, {"factor": 10})
    assert out(result, "b") == 41
    assert kit.calls[-1] == ("b", 41)


def test_handed_over_without_transform_is_the_output() -> None:
    g = graph(Flow("x").node("a", "echo").node("b", "echo").edge("a", "b"))
    assert semantics.handed_over(g.edges[0], {"k": 1}, lookup_of({})) == {"k": 1}


def test_without_inputs_a_node_gets_its_predecessor_output(kit: Kit) -> None:
    result = kit.run(Flow("ch").node("a", "const", params={"output": [1, 2]}).node("b", "echo").edge("a", "b"))
    assert out(result, "b") == [1, 2]


def input_flow(inputs: str | dict[str, str]) -> Flow:
    return (Flow("in").node("user", "const", params={"output": {"name": "Ann", "address": {"city": "Oslo"},
                                                                "tags": ["x", "y"]}})
            .node("target", "echo", inputs=inputs).edge("user", "target"))


@pytest.mark.parametrize(("inputs", "expected"), [
    ("_secret", "s3cret"),
    ("user", {"name": "Ann", "address": {"city": "Oslo"}, "tags": ["x", "y"]}),
    ("user.address.city", "Oslo"),
    ("user.tags.1", "y"),
    ("customer", {"id": 9}),
    ("absent", None),
    ({"who": "user.name", "city": "user.address.city", "c": "customer", "s": "_secret", "gone": "nope"},
     {"who": "Ann", "city": "Oslo", "c": {"id": 9}, "s": "s3cret"}),
])
def test_inputs_resolution(kit: Kit, inputs: str | dict[str, str], expected: Any) -> None:
    result = kit.run(input_flow(inputs), {"_secret": "s3cret", "customer": {"id": 9}})
    assert result.status == "completed"
    assert kit.calls[-1] == ("target", expected)


def test_inputs_context_key_with_dots_is_read_as_one_key() -> None:
    g = graph(Flow("x").node("a", "echo", inputs="cfg.mode"))
    assert semantics.resolve_input(g, g.nodes["a"], None, lookup_of({"cfg.mode": "fast"})) == "fast"


def fan(join: str | None = None) -> Flow:
    return (Flow("fan").node("a", "const", params={"output": 1}).node("b", "const", params={"output": "B"})
            .node("c", "const", params={"output": "C"}).node("j", "echo", join=join)
            .edge("a", "b").edge("a", "c").edge("b", "j").edge("c", "j"))


def test_all_join_receives_each_predecessor_value(kit: Kit) -> None:
    result = kit.run(fan())
    assert result.status == "completed"
    assert kit.count("j") == 1
    assert out(result, "j") == {"b": "B", "c": "C"}


def test_any_join_runs_once_with_the_first_arrival(kit: Kit) -> None:
    result = kit.run(fan("any"))
    assert result.status == "completed"
    assert kit.count("j") == 1
    assert out(result, "j") in ("B", "C")
    first = next(n for n, _ in kit.calls if n in ("b", "c"))
    assert out(result, "j") == out(result, first)


def test_join_decision_all_waits_then_runs() -> None:
    g = graph(fan())
    assert semantics.join_decision(g, "j", 0, JoinState({"b": 1}), "b").outcome == "wait"
    decision = semantics.join_decision(g, "j", 0, JoinState({"b": 1}, {"c"}), "c")
    assert (decision.outcome, decision.value) == ("run", {"b": 1})
    assert semantics.join_decision(g, "j", 0, JoinState({}, {"b", "c"}), "c").outcome == "skip"


def test_join_decision_any_runs_on_the_arriving_predecessor() -> None:
    g = graph(fan("any"))
    decision = semantics.join_decision(g, "j", 0, JoinState({"c": "C"}), "c")
    assert (decision.outcome, decision.value) == ("run", "C")
    assert semantics.join_decision(g, "j", 0, JoinState({}, {"b"}), "b").outcome == "wait"
    assert semantics.join_decision(g, "j", 0, JoinState({}, {"b", "c"}), "c").outcome == "skip"


# -- 3.5 dead-path elimination -----------------------------------------------------------------


def diamond(action: str, chain: bool = False) -> Flow:
    flow = (Flow("dp").node("a", "const", params={"output": "A", "action": action})
            .node("b", "echo").node("c", "echo").node("j", "echo").node("k", "echo")
            .edge("a", "b", action="x").edge("a", "c", action="y"))
    if chain:
        return flow.node("d", "echo").edge("c", "d").edge("d", "j").edge("b", "j").edge("j", "k")
    return flow.edge("b", "j").edge("c", "j").edge("j", "k")


def test_skipped_branch_settles_an_all_join(kit: Kit) -> None:
    result = kit.run(diamond("x"))
    assert result.status == "completed"
    assert kit.ran() == {"a", "b", "j", "k"}
    assert out(result, "j") == {"b": "A"}


def test_chain_of_skips_settles_an_all_join(kit: Kit) -> None:
    result = kit.run(diamond("x", chain=True))
    assert result.status == "completed"
    assert kit.ran() == {"a", "b", "j", "k"}
    assert out(result, "j") == {"b": "A"}


def test_join_with_every_predecessor_skipped_is_skipped(kit: Kit) -> None:
    result = kit.run(diamond("neither"))
    assert result.status == "completed"
    assert kit.ran() == {"a"}
    assert semantics.output_key("k") not in result.context
    skipped = {data["nodeId"] for name, data in kit.events if name == "node:skipped"}
    assert {"b", "c", "j", "k"} <= skipped


def test_skip_of_a_chain_reaches_the_join_after_it(kit: Kit) -> None:
    result = kit.run(diamond("neither", chain=True))
    assert result.status == "completed"
    assert kit.ran() == {"a"}
    skipped = {data["nodeId"] for name, data in kit.events if name == "node:skipped"}
    assert {"b", "c", "d", "j", "k"} <= skipped


# -- 3.6 outputs -------------------------------------------------------------------------------


def test_output_is_stored_under_outputs_key_and_plain_id(kit: Kit) -> None:
    result = kit.run(Flow("o").node("a", "const", params={"output": {"v": 1}}))
    assert result.context["_outputs.a"] == {"v": 1}
    assert result.context["a"] == {"v": 1}


# -- 3.7 dynamic nodes -------------------------------------------------------------------------


def spawn_kit(kit: Kit) -> None:
    @kit.registry.node("spawn")
    def spawn(ctx: NodeContext) -> NodeResult:
        kit.seen(ctx)
        nodes = [{"id": f"{ctx.node_id}_{i}", "uses": "double", "input": i} for i in range(3)]
        return NodeResult(output={"gatherNodeId": "collect"}, dynamic_nodes=nodes)

    @kit.registry.node("double")
    def double(ctx: NodeContext) -> int:
        kit.seen(ctx)
        return int(ctx.input) * 2


def test_dynamic_nodes_run_and_feed_the_gather_node(kit: Kit) -> None:
    spawn_kit(kit)
    result = kit.run(Flow("dyn").node("sp", "spawn").node("collect", "echo").edge("sp", "collect"))
    assert result.status == "completed"
    assert [kit.count(f"sp_{i}") for i in range(3)] == [1, 1, 1]
    assert [out(result, f"sp_{i}") for i in range(3)] == [0, 2, 4]
    assert kit.count("collect") == 1
    gathered = out(result, "collect")
    assert {k: gathered[k] for k in ("sp_0", "sp_1", "sp_2")} == {"sp_0": 0, "sp_1": 2, "sp_2": 4}


def test_dynamic_node_with_unknown_uses_fails_the_run(kit: Kit) -> None:
    @kit.registry.node("bad-spawn")
    def bad_spawn(ctx: NodeContext) -> NodeResult:
        return NodeResult(output=None, dynamic_nodes=[{"id": "x", "uses": "no-such-thing"}])

    result = kit.run(Flow("dyn").node("sp", "bad-spawn"))
    assert result.status == "failed"
    assert "no-such-thing" in result.errors[0]["message"]


# -- §6 batch, sleep, wait ---------------------------------------------------------------------


def batch_blueprint(worker: str) -> Blueprint:
    return Blueprint.from_dict({"id": "bt", "nodes": [
        {"id": "sc", "uses": "batch-scatter", "inputs": "items",
         "params": {"workerUsesKey": worker, "gatherNodeId": "ga", "outputKey": "upper"}},
        {"id": "ga", "uses": "batch-gather", "params": {"gatherNodeId": "ga", "outputKey": "upper"}},
    ], "edges": [{"source": "sc", "target": "ga"}]})


def test_batch_scatter_gather_in_item_order(kit: Kit) -> None:
    @kit.registry.node("upper")
    def upper(ctx: NodeContext) -> str:
        kit.seen(ctx)
        return str(ctx.input).upper()

    result = kit.run(batch_blueprint("upper"), {"items": ["a", "b", "c", "d"]})
    assert result.status == "completed", result.errors
    assert sorted(x for n, x in kit.calls if n != "sc") == ["a", "b", "c", "d"]
    assert result.context["upper"] == ["A", "B", "C", "D"]
    assert out(result, "ga") == ["A", "B", "C", "D"]


def test_batch_gather_orders_by_item_not_by_arrival() -> None:
    store = MemoryContextStore()
    store.create_run("r", {})
    arrivals = {"sc_2": "C", "sc": {"gatherNodeId": "ga", "workers": ["sc_0", "sc_1", "sc_2"]}, "sc_0": "A",
                "sc_1": "B"}
    ctx = NodeContext(input=arrivals, params={"gatherNodeId": "ga", "outputKey": "out"},
                      context=RunContext(store, "r"), run_id="r", node_id="ga", blueprint_id="bt")
    assert batch_gather(ctx).output == ["A", "B", "C"]
    assert store.get("r", "out") == ["A", "B", "C"]


def test_batch_of_an_empty_array_completes(kit: Kit) -> None:
    kit.registry.register("upper", lambda ctx: str(ctx.input).upper())
    result = kit.run(batch_blueprint("upper"), {"items": []})
    assert result.status == "completed", result.errors


def test_batch_scatter_of_a_non_array_fails(kit: Kit) -> None:
    blueprint = Blueprint.from_dict({"id": "bt", "nodes": [
        {"id": "sc", "uses": "batch-scatter", "inputs": "items",
         "params": {"workerUsesKey": "echo", "gatherNodeId": "ga"}},
        {"id": "ga", "uses": "batch-gather", "params": {"gatherNodeId": "ga"}},
    ], "edges": [{"source": "sc", "target": "ga"}]})
    result = kit.run(blueprint, {"items": "not a list"})
    assert result.status == "failed"
    assert "array" in result.errors[0]["message"]


def test_batch_scatter_of_a_non_array_fails_the_run(kit: Kit) -> None:
    kit.registry.register("upper", lambda ctx: str(ctx.input).upper())
    result = kit.run(batch_blueprint("upper"), {"items": {"not": "a list"}})
    assert result.status == "failed"
    assert result.errors[0]["nodeId"] == "sc"
    assert "array" in result.errors[0]["message"]


# -- 3.8 loops -----------------------------------------------------------------------------------


def while_loop(limit: int, body: str = "incr", **body_config: Any) -> Flow:
    return (Flow("lp").node("init", "set", params={"key": "count", "value": 0})
            .node("ctl", "loop-controller", params={"condition": f"count < {limit}"}, join="any")
            .node("body", body, **body_config).node("done", "echo")
            .edge("init", "ctl").edge("ctl", "body", action="continue").edge("body", "ctl")
            .edge("ctl", "done", action="break"))


def test_loop_records_each_iteration_and_shows_the_latest(kit: Kit) -> None:
    runner = kit.runner()
    result = runner.run(while_loop(3).build())
    assert result.status == "completed"
    assert kit.count("body") == 3
    recorded = [runner.contexts.get_output(result.run_id, "body", i) for i in range(3)]
    assert [r.output for r in recorded if r is not None] == [1, 2, 3]
    assert out(result, "body") == 3
    assert kit.count("done") == 1
    assert result.context["_outputs.ctl"] is None


def test_loop_that_never_continues_runs_no_body(kit: Kit) -> None:
    result = kit.run(while_loop(0))
    assert result.status == "completed"
    assert kit.count("body") == 0
    assert kit.count("done") == 1


def test_loop_body_retries_within_each_iteration(kit: Kit) -> None:
    @kit.registry.node("flaky-incr")
    def flaky_incr(ctx: NodeContext) -> int:
        kit.seen(ctx)
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        value = ctx.context.get("count", 0) + 1
        ctx.context.set("count", value)
        return value

    result = kit.run(while_loop(3, "flaky-incr", max_retries=2))
    assert result.status == "completed", result.errors
    assert result.context["count"] == 3
    assert kit.count("body") == 6
    assert [c.attempt for c in kit.contexts["body"]] == [1, 2, 1, 2, 1, 2]
    assert [c.iteration for c in kit.contexts["body"]] == [0, 0, 1, 1, 2, 2]


def test_loop_exit_settles_a_join_after_it(kit: Kit) -> None:
    flow = (while_loop(2).node("side", "const", params={"output": "S"}).node("j", "echo")
            .edge("init", "side").edge("done", "j").edge("side", "j"))
    result = kit.run(flow)
    assert result.status == "completed"
    assert kit.count("j") == 1
    assert set(out(result, "j")) == {"done", "side"}


# -- §6 sleep, wait, resume ----------------------------------------------------------------------


@pytest.mark.parametrize(("duration", "seconds"), [
    (250, 0.25), (0, 0.0), ("30s", 30.0), ("5m", 300.0), ("2h", 7200.0), ("1d", 86400.0), ("1.5s", 1.5),
    ("100ms", 0.1),
])
def test_sleep_durations(duration: Any, seconds: float) -> None:
    assert sleep_seconds({"duration": duration}, "z") == pytest.approx(seconds)


@pytest.mark.parametrize("duration", [-1, "-5s", "5 weeks", "soon", "", None, True, [1]])
def test_invalid_sleep_duration_is_an_error_naming_the_node(duration: Any) -> None:
    with pytest.raises(ValueError, match="'zz'"):
        sleep_seconds({"duration": duration}, "zz")


def test_sleep_continues_by_itself(kit: Kit) -> None:
    flow = (Flow("sl").node("a", "const", params={"output": "x"}).node("nap", "sleep", params={"duration": 20})
            .node("b", "echo").chain("a", "nap", "b"))
    result = kit.run(flow)
    assert result.status == "completed"
    assert out(result, "b") == "x"
    assert "nap" not in kit.ran()


def test_invalid_sleep_duration_fails_validation(kit: Kit) -> None:
    flow = Flow("sl").node("nap", "sleep", params={"duration": "forever"})
    with pytest.raises(BlueprintValidationError) as info:
        kit.run(flow)
    assert [i.code for i in info.value.issues] == ["INVALID_CONFIG"]
    assert "nap" in str(info.value)


def approval_flow() -> Flow:
    return (Flow("hw").node("draft", "const", params={"output": "text"}).node("approval", "wait")
            .node("publish", "echo").node("discard", "echo").edge("draft", "approval")
            .edge("approval", "publish", action="approve").edge("approval", "discard", action="reject"))


def test_wait_makes_the_run_await(kit: Kit) -> None:
    runner = kit.runner()
    result = runner.run(approval_flow().build())
    assert result.status == "awaiting"
    status = runner.statuses.get(result.run_id)
    assert status is not None
    assert status["status"] == "awaiting"
    assert status.get("awaiting") == ["approval"]
    assert kit.ran() == {"draft"}


@pytest.mark.parametrize(("action", "taken", "not_taken"), [("approve", "publish", "discard"),
                                                           ("reject", "discard", "publish")])
def test_resume_routes_by_action(kit: Kit, action: str, taken: str, not_taken: str) -> None:
    runner = kit.runner()
    waiting = runner.run(approval_flow().build())
    result = runner.resume(waiting.run_id, action, {"by": "lee"})
    assert result.status == "completed"
    assert out(result, "approval") == {"by": "lee"}
    assert out(result, taken) == {"by": "lee"}
    assert not_taken not in kit.ran()
    status = runner.statuses.get(result.run_id)
    assert status is not None and status["status"] == "completed"


def test_resume_of_a_run_that_is_not_awaiting_is_refused(kit: Kit) -> None:
    runner = kit.runner()
    done = runner.run(Flow("c").node("a", "echo").build())
    with pytest.raises(ValueError, match="not awaiting"):
        runner.resume(done.run_id, "approve")


def test_resume_of_an_unknown_run_is_refused(kit: Kit) -> None:
    with pytest.raises(KeyError, match="no-such-run"):
        kit.runner().resume("no-such-run")


def test_resume_of_a_node_that_is_not_waiting_is_refused(kit: Kit) -> None:
    runner = kit.runner()
    waiting = runner.run(approval_flow().build())
    with pytest.raises(ValueError, match="'publish'"):
        runner.resume(waiting.run_id, "approve", None, node_id="publish")
    assert runner.resume(waiting.run_id, "approve", None, node_id="approval").status == "completed"


def test_two_waits_are_resumed_one_by_one(kit: Kit) -> None:
    flow = (Flow("two").node("w1", "wait").node("w2", "wait").node("j", "echo")
            .edge("w1", "j").edge("w2", "j"))
    runner = kit.runner()
    first = runner.run(flow.build())
    second = runner.resume(first.run_id, None, "one", node_id="w2")
    assert second.status == "awaiting"
    assert "j" not in kit.ran()
    final = runner.resume(first.run_id, None, "two", node_id="w1")
    assert final.status == "completed"
    assert out(final, "j") == {"w1": "two", "w2": "one"}


# -- §6 subflow ---------------------------------------------------------------------------------


def test_subflow_maps_inputs_and_outputs(kit: Kit) -> None:
    @kit.registry.node("greet")
    def greet(ctx: NodeContext) -> str:
        kit.seen(ctx)
        return f"Hello {ctx.context.get('name')} ({ctx.context.get('topic')})"

    child = Flow("child").node("greet", "greet").build()
    parent = (Flow("parent").node("summarize", "const", params={"output": "billing"})
              .node("sub", "subflow", params={"blueprintId": "child", "inputs": {"name": "applicant",
                                                                                 "topic": "summarize"},
                                              "outputs": {"greeting": "greet", "who": "name"}})
              .node("after", "echo").chain("summarize", "sub", "after").build())
    result = kit.runner({"child": child}).run(parent, {"applicant": "Ann"})
    assert result.status == "completed", result.errors
    assert result.context["greeting"] == "Hello Ann (billing)"
    assert result.context["who"] == "Ann"
    assert out(result, "sub")["_outputs.greet"] == "Hello Ann (billing)"
    assert out(result, "after") == out(result, "sub")


def test_subflow_output_is_the_single_terminal_output(kit: Kit) -> None:
    child = Flow("child").node("a", "echo").node("b", "echo").edge("a", "b").build()
    parent = (Flow("parent").node("src", "const", params={"output": 42})
              .node("sub", "subflow", params={"blueprintId": "child"}).edge("src", "sub").build())
    result = kit.runner({"child": child}).run(parent)
    assert result.status == "completed"
    assert out(result, "sub") == 42
    assert ("a", 42) in kit.calls


def test_subflow_with_several_terminals_outputs_each(kit: Kit) -> None:
    child = (Flow("child").node("a", "echo").node("x", "const", params={"output": "X"})
             .node("y", "const", params={"output": "Y"}).edge("a", "x").edge("a", "y").build())
    parent = Flow("parent").node("sub", "subflow", params={"blueprintId": "child"}).build()
    result = kit.runner({"child": child}).run(parent)
    assert out(result, "sub") == {"x": "X", "y": "Y"}


def test_failing_child_fails_the_parent(kit: Kit) -> None:
    child = Flow("child").node("bad", "fail").build()
    parent = (Flow("parent").node("sub", "subflow", params={"blueprintId": "child"}).node("after", "echo")
              .edge("sub", "after").build())
    result = kit.runner({"child": child}).run(parent)
    assert result.status == "failed"
    assert result.errors[0]["nodeId"] == "sub"
    assert "boom bad" in result.errors[0]["message"]
    assert "after" not in kit.ran()


def test_awaiting_child_makes_the_parent_await_and_resume_continues_it(kit: Kit) -> None:
    child = (Flow("child").node("ask", "wait").node("yes", "echo").node("no", "echo")
             .edge("ask", "yes", action="yes").edge("ask", "no", action="no").build())
    parent = (Flow("parent").node("sub", "subflow", params={"blueprintId": "child"}).node("after", "echo")
              .edge("sub", "after").build())
    runner = kit.runner({"child": child})
    waiting = runner.run(parent)
    assert waiting.status == "awaiting"
    assert "after" not in kit.ran()
    result = runner.resume(waiting.run_id, "yes", "ok")
    assert result.status == "completed", result.errors
    assert out(result, "sub") == "ok"
    assert out(result, "after") == "ok"
    assert "no" not in kit.ran()


# -- 3.9 retries, timeouts, class nodes, fallback, failure ------------------------------------------


def test_retries_until_success_with_retry_delay(kit: Kit) -> None:
    flow = Flow("r").node("a", "flaky", params={"fail": 2, "output": "ok"}, max_retries=3, retry_delay=5)
    result = kit.run(flow)
    assert result.status == "completed"
    assert out(result, "a") == "ok"
    assert [c.attempt for c in kit.contexts["a"]] == [1, 2, 3]
    assert kit.event_names("a").count("node:retry") == 2


def test_retries_exhausted_fail_the_run_with_the_last_attempt(kit: Kit) -> None:
    result = kit.run(Flow("r").node("a", "flaky", params={"fail": 5}, max_retries=2))
    assert result.status == "failed"
    assert kit.count("a") == 2
    assert result.errors == [{"nodeId": "a", "message": "boom a", "attempt": 2, "type": "RuntimeError"}]


def test_returned_error_is_a_failed_attempt(kit: Kit) -> None:
    kit.registry.register("says-error", lambda ctx: NodeResult(error="upstream said no"))
    result = kit.run(Flow("r").node("a", "says-error", max_retries=2))
    assert result.status == "failed"
    assert result.errors[0]["message"] == "upstream said no"
    assert result.errors[0]["attempt"] == 2


def test_timeout_fails_a_sync_attempt_and_signals_cancellation(kit: Kit) -> None:
    seen: list[NodeContext] = []

    @kit.registry.node("slow")
    def slow(ctx: NodeContext) -> str:
        seen.append(ctx)
        ctx.cancelled.wait(10)
        return "late"

    result = kit.run(Flow("t").node("a", "slow", timeout=50).node("b", "echo").edge("a", "b"))
    assert result.status == "failed"
    assert "timeout" in result.errors[0]["message"]
    assert result.errors[0]["type"] == "NodeTimeoutError"
    assert seen[0].cancelled.is_set()
    assert "b" not in kit.ran()


def test_timeout_fails_an_async_attempt(kit: Kit) -> None:
    @kit.registry.node("slow-async")
    async def slow_async(ctx: NodeContext) -> str:
        await asyncio.sleep(10)
        return "late"

    result = kit.run(Flow("t").node("a", "slow-async", timeout=50))
    assert result.status == "failed"
    assert "timeout" in result.errors[0]["message"]


def test_timed_out_attempt_is_retried(kit: Kit) -> None:
    @kit.registry.node("slow-once")
    async def slow_once(ctx: NodeContext) -> str:
        if ctx.attempt == 1:
            await asyncio.sleep(10)
        return "second"

    result = kit.run(Flow("t").node("a", "slow-once", timeout=50, max_retries=2))
    assert result.status == "completed"
    assert out(result, "a") == "second"


def test_async_node_without_timeout(kit: Kit) -> None:
    @kit.registry.node("async-echo")
    async def async_echo(ctx: NodeContext) -> NodeResult:
        await asyncio.sleep(0)
        return NodeResult(output=ctx.params["v"], action="go")

    flow = (Flow("a").node("a", "async-echo", params={"v": 3}).node("b", "echo").node("c", "echo")
            .edge("a", "b", action="go").edge("a", "c"))
    result = kit.run(flow)
    assert out(result, "a") == 3
    assert kit.ran() == {"b"}


class Lifecycle(Node):
    """A class node logging its phases; exec fails on its first attempt."""

    log: list[str] = []

    def prep(self, ctx: NodeContext) -> Any:
        self.log.append("prep")
        return ctx.input * 2

    def exec(self, prepared: Any, ctx: NodeContext) -> Any:
        self.log.append("exec")
        if ctx.attempt == 1:
            raise RuntimeError("exec once")
        return prepared + 1

    def post(self, result: Any, ctx: NodeContext) -> Any:
        self.log.append("post")
        return NodeResult(output=result * 10, action="done")


def test_class_node_runs_prep_exec_post_and_retries_exec(kit: Kit) -> None:
    Lifecycle.log = []
    kit.registry.register("life", Lifecycle)
    flow = (Flow("c").node("src", "const", params={"output": 2}).node("a", "life", max_retries=2)
            .node("b", "echo").edge("src", "a").edge("a", "b", action="done"))
    result = kit.run(flow)
    assert result.status == "completed", result.errors
    assert out(result, "a") == 50
    assert out(result, "b") == 50
    assert [p for p in Lifecycle.log if p != "prep"] == ["exec", "exec", "post"]
    assert Lifecycle.log[0] == "prep"


def test_class_node_prep_runs_once_when_exec_is_retried(kit: Kit) -> None:
    Lifecycle.log = []
    kit.registry.register("life", Lifecycle)
    flow = Flow("c").node("src", "const", params={"output": 2}).node("a", "life", max_retries=2).edge("src", "a")
    assert kit.run(flow).status == "completed"
    assert Lifecycle.log == ["prep", "exec", "exec", "post"]


def test_class_node_own_fallback_produces_the_result(kit: Kit) -> None:
    errors: list[BaseException] = []

    class WithFallback(Node):
        def exec(self, prepared: Any, ctx: NodeContext) -> Any:
            raise ValueError("service down")

        def fallback(self, error: BaseException, ctx: NodeContext) -> Any:
            errors.append(error)
            return f"cached after {error}"

    kit.registry.register("wf", WithFallback)
    result = kit.run(Flow("f").node("a", "wf", max_retries=2).node("b", "echo").edge("a", "b"))
    assert result.status == "completed"
    assert out(result, "b") == "cached after service down"
    assert len(errors) == 1 and isinstance(errors[0], ValueError)


def recorder_node(phase: str, calls: list[tuple[str, str]]) -> type[Node]:
    """A class node that raises in `phase` and records recover() calls."""

    class Failing(Node):
        def prep(self, ctx: NodeContext) -> Any:
            if phase == "prep":
                raise RuntimeError("prep broke")
            return ctx.input

        def exec(self, prepared: Any, ctx: NodeContext) -> Any:
            calls.append(("exec", str(ctx.attempt)))
            if phase == "exec":
                raise RuntimeError("exec broke")
            return prepared

        def post(self, result: Any, ctx: NodeContext) -> Any:
            if phase == "post":
                raise RuntimeError("post broke")
            return result

        def recover(self, error: BaseException, ctx: NodeContext) -> None:
            calls.append(("recover", str(error)))

    return Failing


@pytest.mark.parametrize("phase", ["prep", "post"])
def test_recover_is_called_on_a_fatal_error_which_is_not_retried(kit: Kit, phase: str) -> None:
    calls: list[tuple[str, str]] = []
    kit.registry.register("broken", recorder_node(phase, calls))
    result = kit.run(Flow("f").node("a", "broken", max_retries=3))
    assert result.status == "failed"
    assert result.errors[0]["message"] == f"{phase} broke"
    assert calls.count(("recover", f"{phase} broke")) == 1
    assert len([c for c in calls if c[0] == "exec"]) == (0 if phase == "prep" else 1)


def test_recover_is_called_when_exec_failures_escape(kit: Kit) -> None:
    calls: list[tuple[str, str]] = []
    kit.registry.register("broken", recorder_node("exec", calls))
    result = kit.run(Flow("f").node("a", "broken", max_retries=2))
    assert result.status == "failed"
    assert calls == [("exec", "1"), ("exec", "2"), ("recover", "exec broke")]


def test_fallback_node_takes_over_and_drives_the_original_edges(kit: Kit) -> None:
    flow = (Flow("fb").node("primary", "fail", max_retries=2, fallback="backup")
            .node("backup", "const", params={"output": "from-cache"}).node("use", "echo").edge("primary", "use"))
    result = kit.run(flow)
    assert result.status == "completed"
    assert kit.count("primary") == 2
    assert kit.count("backup") == 1
    assert out(result, "use") == "from-cache"
    assert out(result, "primary") == "from-cache"
    assert "node:fallback" in kit.event_names("primary")
    assert result.errors == []


def test_fallback_node_gets_the_original_input(kit: Kit) -> None:
    flow = (Flow("fb").node("src", "const", params={"output": 7}).node("primary", "fail", fallback="backup")
            .node("backup", "echo").edge("src", "primary"))
    result = kit.run(flow)
    assert out(result, "backup") == 7


def test_failure_stops_successors_and_keeps_the_original_message(kit: Kit) -> None:
    flow = (Flow("f").node("a", "const", params={"output": 1}).node("bad", "fail").node("after", "echo")
            .node("side", "echo").node("j", "echo")
            .edge("a", "bad").edge("bad", "after").edge("a", "side").edge("after", "j").edge("side", "j"))
    runner = kit.runner()
    result = runner.run(flow.build())
    assert result.status == "failed"
    assert result.errors[0]["nodeId"] == "bad"
    assert result.errors[0]["message"] == "boom bad"
    assert result.errors[0]["attempt"] == 1
    assert "after" not in kit.ran() and "j" not in kit.ran()
    status = runner.statuses.get(result.run_id)
    assert status is not None and status["status"] == "failed"


# -- idempotency keys, parallel writes, cancel -------------------------------------------------------


def test_idempotency_key_is_stable_across_retries(kit: Kit) -> None:
    result = kit.run(Flow("i").node("a", "flaky", params={"fail": 2}, max_retries=3))
    keys = {c.idempotency_key for c in kit.contexts["a"]}
    assert len(kit.contexts["a"]) == 3
    assert len(keys) == 1
    assert result.run_id in keys.pop()


def test_idempotency_key_differs_per_loop_iteration_and_per_node(kit: Kit) -> None:
    @kit.registry.node("flaky-incr")
    def flaky_incr(ctx: NodeContext) -> int:
        kit.seen(ctx)
        if ctx.attempt == 1:
            raise RuntimeError("again")
        value = ctx.context.get("count", 0) + 1
        ctx.context.set("count", value)
        return value

    kit.run(while_loop(3, "flaky-incr", max_retries=2))
    body = [c.idempotency_key for c in kit.contexts["body"]]
    assert body[0] == body[1] and body[2] == body[3] and body[4] == body[5]
    assert len(set(body)) == 3
    assert kit.contexts["init"][0].idempotency_key not in body


def test_idempotency_key_differs_between_runs(kit: Kit) -> None:
    flow = Flow("i").node("a", "echo")
    kit.run(flow)
    kit.run(flow)
    assert kit.contexts["a"][0].idempotency_key != kit.contexts["a"][1].idempotency_key


def test_parallel_context_writes_survive(kit: Kit) -> None:
    @kit.registry.node("write-own")
    def write_own(ctx: NodeContext) -> Any:
        ctx.context.set(f"seen.{ctx.node_id}", ctx.input)
        ctx.context.patch([{"op": "set", "key": f"patched.{ctx.node_id}", "value": True}])
        return ctx.input

    flow = Flow("pw").node("start", "const", params={"output": "go"}).node("j", "echo")
    for i in range(20):
        flow.node(f"w{i}", "write-own").edge("start", f"w{i}").edge(f"w{i}", "j")
    result = kit.run(flow)
    assert result.status == "completed"
    for i in range(20):
        assert result.context[f"seen.w{i}"] == "go"
        assert result.context[f"patched.w{i}"] is True
    assert len(out(result, "j")) == 20


def test_cancel_from_inside_a_node_stops_the_run(kit: Kit) -> None:
    @kit.registry.node("stopper")
    def stopper(ctx: NodeContext) -> str:
        kit.seen(ctx)
        ctx.deps["runner"].cancel(ctx.run_id)
        return "stopping"

    runner = kit.runner()
    runner.deps["runner"] = runner
    flow = Flow("cx").node("a", "stopper").node("b", "echo").node("c", "echo").chain("a", "b", "c")
    result = runner.run(flow.build())
    assert result.status == "cancelled"
    assert kit.ran() == {"a"}
    status = runner.statuses.get(result.run_id)
    assert status is not None and status["status"] == "cancelled"


def test_cancel_an_awaiting_run_starts_nothing_more(kit: Kit) -> None:
    runner = kit.runner()
    waiting = runner.run(approval_flow().build())
    runner.cancel(waiting.run_id)
    status = runner.statuses.get(waiting.run_id)
    assert status is not None and status["status"] == "cancelled"
    with contextlib.suppress(ValueError):
        assert runner.resume(waiting.run_id, "approve", "late").status == "cancelled"
    assert "publish" not in kit.ran()
    status = runner.statuses.get(waiting.run_id)
    assert status is not None and status["status"] == "cancelled"


def test_resume_of_a_cancelled_run_is_refused(kit: Kit) -> None:
    runner = kit.runner()
    waiting = runner.run(approval_flow().build())
    runner.cancel(waiting.run_id)
    with pytest.raises(ValueError, match="not awaiting"):
        runner.resume(waiting.run_id, "approve", "late")


def test_a_transform_giving_nan_or_infinity_hands_over_null(kit: Kit) -> None:
    flow = (Flow("nan").node("a", "const", params={"output": 0}).node("b", "echo").node("c", "echo")
            .edge("a", "b", transform="input / 0").edge("a", "c", transform="[input / 0, 0 / 0, 1]"))
    result = kit.run(flow)
    assert result.status == "completed"
    assert out(result, "b") is None
    assert out(result, "c") == [None, None, 1]


def test_batch_chunk_size_runs_items_in_waves(kit: Kit) -> None:
    order: list[str] = []

    def work(ctx: NodeContext) -> str:
        order.append(ctx.input)
        return ctx.input.upper()

    kit.registry.register("wave-work", work)
    flow = (Flow("waves").node("sc", "batch-scatter", inputs="items",
                               params={"workerUsesKey": "wave-work", "gatherNodeId": "ga", "chunkSize": 2})
            .node("ga", "batch-gather", params={"gatherNodeId": "ga", "outputKey": "out"}).edge("sc", "ga"))
    result = kit.run(flow, {"items": ["a", "b", "c", "d", "e"]})
    assert result.status == "completed"
    assert result.context["out"] == ["A", "B", "C", "D", "E"]
    assert sorted(order) == ["a", "b", "c", "d", "e"]


def test_batch_waves_wait_for_the_whole_previous_wave() -> None:
    from flowcraft_celery.engine.builtins import batch_scatter
    from flowcraft_celery.engine.context import RunContext
    from flowcraft_celery.model.graph import DynamicAddition, Graph
    from flowcraft_celery.stores.memory import MemoryContextStore

    blueprint = (Flow("w").node("sc", "batch-scatter", params={"workerUsesKey": "x", "gatherNodeId": "ga",
                                                                 "chunkSize": 2})
                 .node("ga", "batch-gather", params={"gatherNodeId": "ga"}).edge("sc", "ga").build())
    ctx = NodeContext(input=[1, 2, 3, 4, 5], params=dict(blueprint.node("sc").params),
                      context=RunContext(MemoryContextStore(), "r"), run_id="r", node_id="sc", blueprint_id="w")
    result = batch_scatter(ctx)
    graph = Graph(blueprint).extend([DynamicAddition.from_result("sc", result.dynamic_nodes, result.output)])
    assert graph.predecessors("sc_0") == ["sc"] and graph.predecessors("sc_1") == ["sc"]
    assert graph.predecessors("sc_2") == ["sc_0", "sc_1"] == graph.predecessors("sc_3")
    assert graph.predecessors("sc_4") == ["sc_2", "sc_3"]
    assert set(graph.predecessors("ga")) == {"sc", "sc_0", "sc_1", "sc_2", "sc_3", "sc_4"}
