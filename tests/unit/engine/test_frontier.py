"""A run's frontier from its recorded outputs alone: what a Redis loss leaves to rebuild from."""

from __future__ import annotations

from typing import Any

from flowcraft_celery.engine.context import NodeContext
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
        return ctx.input if ctx.input is not None else ctx.node_id

    @nodes.node("incr")
    def incr(ctx: NodeContext) -> int:
        value = ctx.context.get("count", 0) + 1
        ctx.context.set("count", value)
        return value

    @nodes.node("act")
    def act(ctx: NodeContext) -> NodeResult:
        return NodeResult(output=ctx.node_id, action=ctx.params.get("action"))

    @nodes.node("spread")
    def spread(ctx: NodeContext) -> NodeResult:
        workers = [{"id": f"w{i}", "uses": "echo"} for i in range(3)]
        return NodeResult(output={"gatherNodeId": "gather"}, dynamic_nodes=workers)

    return nodes


def run_all(flow: Flow) -> tuple[Graph, dict[tuple[str, int], RecordedOutput], dict[str, Any]]:
    """Run a flow to its end on the local runner; return its graph, outputs and final context."""
    store = MemoryContextStore()
    result = LocalRunner(registry(), context_store=store).run(flow.build())
    assert result.status == "completed", result.errors
    outputs = {(o.node_id, o.iteration): o for o in store.outputs(result.run_id)}
    return Graph(flow.build()), outputs, result.context


def replay(graph: Graph, outputs: dict[tuple[str, int], RecordedOutput], context: dict[str, Any]) -> Any:
    return frontier(graph, "r1", outputs, None, lambda key: context.get(key, MISSING))


def without(outputs: dict[tuple[str, int], RecordedOutput], *keys: tuple[str, int]) -> dict[Any, RecordedOutput]:
    return {k: v for k, v in outputs.items() if k not in keys}


def test_a_finished_chain_has_nothing_pending_and_a_cut_chain_resumes_after_its_last_output() -> None:
    graph, outputs, context = run_all(Flow("c").node("a", "echo").node("b", "echo").node("c", "echo")
                                      .chain("a", "b", "c"))
    assert replay(graph, outputs, context).complete
    cut = replay(graph, without(outputs, ("b", 0), ("c", 0)), context)
    assert list(cut.pending) == ["b@0"]
    assert set(cut.finished) == {"a@0"}
    assert cut.pending["b@0"].value == "a"


def test_an_all_join_waits_for_the_branch_without_output_and_keeps_the_arrivals() -> None:
    flow = (Flow("j").node("a", "echo").node("b", "echo").node("c", "echo").node("j", "echo")
            .edge("a", "b").edge("a", "c").edge("b", "j").edge("c", "j"))
    graph, outputs, context = run_all(flow)
    assert replay(graph, outputs, context).complete
    cut = replay(graph, without(outputs, ("c", 0), ("j", 0)), context)
    assert list(cut.pending) == ["c@0"]
    assert [(a.scope, a.predecessor) for a in cut.arrivals if not a.skipped] == [("r1:j@0", "b")]
    assert cut.claims == {}


def test_a_branch_not_taken_settles_its_join_by_a_skip() -> None:
    flow = (Flow("s").node("a", "act", params={"action": "left"}).node("l", "echo").node("r", "echo")
            .node("j", "echo").edge("a", "l", action="left").edge("a", "r", action="right")
            .edge("l", "j").edge("r", "j"))
    graph, outputs, context = run_all(flow)
    full = replay(graph, outputs, context)
    assert full.complete and "r@0" not in full.finished
    cut = replay(graph, without(outputs, ("j", 0)), context)
    assert list(cut.pending) == ["j@0"]
    assert cut.claims == {"r1:j@0": "l"}


def test_loop_iterations_replay_to_the_iteration_without_output() -> None:
    flow = (Flow("lp").node("init", "incr")
            .node("ctl", "loop-controller", params={"condition": "count < 3"}, join="any")
            .node("body", "incr").node("done", "echo").edge("init", "ctl")
            .edge("ctl", "body", action="continue").edge("body", "ctl").edge("ctl", "done", action="break"))
    graph, outputs, context = run_all(flow)
    assert outputs.keys() >= {("body", 0), ("body", 1), ("ctl", 2), ("done", 0)}
    assert replay(graph, outputs, context).complete
    cut = replay(graph, without(outputs, ("body", 1), ("ctl", 2), ("done", 0)), context)
    assert list(cut.pending) == ["body@1"]


def test_dynamic_nodes_come_back_from_the_recorded_output() -> None:
    flow = Flow("d").node("s", "spread").node("gather", "echo").edge("s", "gather")
    graph, outputs, context = run_all(flow)
    full = replay(graph, outputs, context)
    assert full.complete and {"w0@0", "w1@0", "w2@0", "gather@0"} <= set(full.finished)
    cut = replay(graph, without(outputs, ("w1", 0), ("gather", 0)), context)
    assert list(cut.pending) == ["w1@0"]
    assert set(cut.additions) == {"s@0"}


def test_a_fallback_output_stands_for_its_node() -> None:
    graph = Graph(Flow("f").node("a", "echo", fallback="fb").node("fb", "echo").node("b", "echo")
                  .edge("a", "b").build())
    outputs = {("fb", 0): RecordedOutput("fb", 0, "from fallback")}
    result = replay(graph, outputs, {})
    assert list(result.pending) == ["b@0"] and result.pending["b@0"].value == "from fallback"
