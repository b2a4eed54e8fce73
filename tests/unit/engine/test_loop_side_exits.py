"""Loop side exits and the joins after a loop (language doc "Loops", SPEC §3.5 and §3.8).

The rules pinned here, each by what a user sees (status, executions per node, inputs):
- a loop's merge node (reached by the controller's `break` and by a side exit of the body) is
  after the loop, not in its body: it runs once, in the iteration of the code around the loop;
- an exit edge that a pass did not take is skipped for good only once the loop is left AND the
  source's execution in the last pass has decided (a side exit taken in the last pass is never
  skipped early because the loop was left in the same cascade, or by a controller that broke
  while an off-cycle node of the last pass was still to run);
- a loop left before any pass settles every exit of its body at once;
- an exit out of two nested loops is settled only once both are left;
- a join fires at most once per (node, iteration), even when the same predecessor is skipped
  twice or arrives after it was skipped.
"""

from __future__ import annotations

from typing import Any

from flowcraft_celery.engine import dispatch, semantics
from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.frontier import frontier
from flowcraft_celery.engine.registry import NodeResult, Registry
from flowcraft_celery.local.runner import LocalRunner
from flowcraft_celery.model.blueprint import EdgeDefinition
from flowcraft_celery.model.builder import Flow
from flowcraft_celery.model.graph import Graph
from flowcraft_celery.stores.base import MISSING
from flowcraft_celery.stores.memory import MemoryContextStore, MemoryCoordinationStore


class Calls:
    """Test nodes that log (node, iteration, input)."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.log: list[tuple[str, int, Any]] = []
        self.attempts: dict[str, int] = {}
        reg = self.registry.register

        def echo(ctx: NodeContext) -> Any:
            self.log.append((ctx.node_id, ctx.iteration, ctx.input))
            return ctx.node_id

        def incr(ctx: NodeContext) -> int:
            value = (ctx.context.get("c") or 0) + 1
            ctx.context.set("c", value)
            self.log.append((ctx.node_id, ctx.iteration, value))
            return value

        def zero(ctx: NodeContext) -> int:
            ctx.context.set("c", 0)
            self.log.append((ctx.node_id, ctx.iteration, 0))
            return 0

        def flaky(ctx: NodeContext) -> Any:
            """Fails its first attempt."""
            self.attempts[ctx.node_id] = self.attempts.get(ctx.node_id, 0) + 1
            self.log.append((ctx.node_id, ctx.iteration, ctx.input))
            if self.attempts[ctx.node_id] == 1:
                raise RuntimeError("first attempt fails")
            return ctx.node_id

        reg("echo", echo)
        reg("incr", incr)
        reg("zero", zero)
        reg("flaky", flaky)

    def of(self, node_id: str) -> list[tuple[int, Any]]:
        return [(it, value) for n, it, value in self.log if n == node_id]


def side_exit_loop(passes: int, exit_at: int, merge: str = "all") -> Flow:
    """r (c := 0) -> ctl (`c < passes`) -continue-> inc (c += 1); inc -[c !== exit_at]-> bk -> ctl;
    inc -[c === exit_at]-> sx -> lm; ctl -break-> lm (joinStrategy `merge`)."""
    return (Flow("side").node("r", "zero")
            .node("ctl", "loop-controller", params={"condition": f"c < {passes}"}, join="any")
            .node("inc", "incr").node("bk", "echo").node("sx", "echo").node("lm", "echo", join=merge)
            .edge("r", "ctl").edge("ctl", "inc", action="continue")
            .edge("inc", "bk", condition=f"c !== {exit_at}").edge("bk", "ctl")
            .edge("inc", "sx", condition=f"c === {exit_at}").edge("sx", "lm")
            .edge("ctl", "lm", action="break"))


def test_a_side_exit_merge_is_after_the_loop_not_in_its_body() -> None:
    graph = Graph(side_exit_loop(2, 1).build())
    assert graph.bodies["ctl"] == frozenset({"inc", "bk", "sx"})
    assert graph.loops_of("lm") == ()
    assert graph.is_exit_edge(EdgeDefinition("sx", "lm")) and graph.is_exit_edge(EdgeDefinition("ctl", "lm"))
    assert semantics.target_iteration(graph, EdgeDefinition("sx", "lm"), 1) == 0


def test_a_loop_left_before_any_pass_settles_its_side_exit_and_runs_the_merge_once() -> None:
    calls = Calls()
    result = LocalRunner(calls.registry).run(side_exit_loop(0, 1).build())
    assert result.status == "completed", result.errors
    assert calls.of("inc") == [] and calls.of("sx") == []
    assert calls.of("lm") == [(0, {"ctl": None})]  # the side exit counted as skipped


def test_a_loop_that_breaks_settles_its_unused_side_exit_and_runs_the_merge_once() -> None:
    calls = Calls()
    result = LocalRunner(calls.registry).run(side_exit_loop(2, 5).build())
    assert result.status == "completed", result.errors
    assert [it for it, _ in calls.of("inc")] == [0, 1]
    assert calls.of("lm") == [(0, {"ctl": None})]


def test_a_side_exit_taken_in_the_last_pass_is_not_skipped_by_the_loop_being_left() -> None:
    calls = Calls()
    result = LocalRunner(calls.registry).run(side_exit_loop(3, 2).build())
    assert result.status == "completed", result.errors
    assert [it for it, _ in calls.of("inc")] == [0, 1]
    assert [it for it, _ in calls.of("sx")] == [1]
    assert calls.of("lm") == [(0, {"sx": "sx"})]  # the controller's break counted as skipped


def test_an_any_merge_after_a_side_exit_runs_once() -> None:
    for passes, exit_at in ((0, 1), (2, 5), (3, 2)):
        calls = Calls()
        result = LocalRunner(calls.registry).run(side_exit_loop(passes, exit_at, merge="any").build())
        assert result.status == "completed", result.errors
        assert len(calls.of("lm")) == 1, (passes, exit_at)


def test_an_off_cycle_exit_source_still_to_run_when_the_controller_breaks_decides_its_exit() -> None:
    """ctl -continue-> a; a -> b -> ctl (the cycle); a -> s1 -> s2 -> lm (off the cycle, out of the
    loop). The controller's next pass breaks before s2 of the same pass runs: s2's exit is not
    skipped by the break, s2 takes it, and lm (an all join with the break) runs once with both."""
    calls = Calls()
    flow = (Flow("slow").node("r", "zero")
            .node("ctl", "loop-controller", params={"condition": "c < 1"}, join="any")
            .node("a", "incr").node("b", "echo").node("s1", "echo").node("s2", "echo").node("lm", "echo", join="all")
            .edge("r", "ctl").edge("ctl", "a", action="continue").edge("a", "b").edge("b", "ctl")
            .edge("a", "s1").edge("s1", "s2").edge("s2", "lm").edge("ctl", "lm", action="break"))
    result = LocalRunner(calls.registry).run(flow.build())
    assert result.status == "completed", result.errors
    assert calls.of("s2") == [(0, "s1")]
    assert calls.of("lm") == [(0, {"ctl": None, "s2": "s2"})]


def nested_with_far_exit(far_condition: str) -> Flow:
    """Outer loop octl (2 passes, counter o) around inner loop ictl (2 passes, counter c); the
    inner body ib has an edge straight out of both loops into `fin`, which joins it with the
    outer controller's break (joinStrategy all)."""
    return (Flow("far").node("or", "echo")
            .node("octl", "loop-controller", params={"condition": "o < 2"}, join="any")
            .node("ob", "echo").node("ir", "zero")
            .node("ictl", "loop-controller", params={"condition": "c < 2"}, join="any")
            .node("ib", "incr").node("il", "echo").node("ol", "echo").node("fin", "echo", join="all")
            .edge("or", "octl").edge("octl", "ob", action="continue").edge("ob", "ir").edge("ir", "ictl")
            .edge("ictl", "ib", action="continue").edge("ib", "ictl").edge("ictl", "il", action="break")
            .edge("il", "ol").edge("ol", "octl").edge("ib", "fin", condition=far_condition)
            .edge("octl", "fin", action="break"))


class Outer(Calls):
    def __init__(self) -> None:
        super().__init__()

        def bump(ctx: NodeContext) -> Any:
            ctx.context.set("o", (ctx.context.get("o") or 0) + 1)
            self.log.append((ctx.node_id, ctx.iteration, ctx.input))
            return ctx.node_id

        self.registry.register("bump", bump)


def test_an_exit_out_of_two_nested_loops_is_settled_only_once_both_are_left() -> None:
    for condition, expected in (("c === 99", {"octl": None}), ("o === 1 && c === 2", {"octl": None, "ib": 2})):
        calls = Outer()
        flow = nested_with_far_exit(condition)
        blueprint = flow.build()
        data = blueprint.to_dict()
        for node in data["nodes"]:
            if node["id"] == "ol":
                node["uses"] = "bump"
        result = LocalRunner(calls.registry).run(type(blueprint).from_dict(data), {"o": 0})
        assert result.status == "completed", result.errors
        assert len(calls.of("ib")) == 4  # 2 outer passes x 2 inner passes
        assert calls.of("fin") == [(0, expected)], condition


def test_the_merge_after_an_unused_side_exit_fires_once_even_when_its_first_attempt_fails() -> None:
    """e -> ea -> ej and e -> (loop whose side exit is never taken, `any` merge lm) -> ej: ej
    (all join) fails its first attempt and is retried: 2 attempts, never a second start."""
    calls = Calls()
    flow = side_exit_loop(1, 2, merge="any")
    flow = (flow.node("e", "echo").node("ea", "echo").node("ej", "flaky", join="all", max_retries=2)
            .edge("e", "ea").edge("ea", "ej").edge("e", "r").edge("lm", "ej"))
    result = LocalRunner(calls.registry).run(flow.build())
    assert result.status == "completed", result.errors
    assert len(calls.of("lm")) == 1
    assert calls.attempts["ej"] == 2


def test_a_join_fires_once_when_the_same_predecessor_is_skipped_twice_or_arrives_after_its_skip() -> None:
    flow = (Flow("j").node("a", "echo").node("b", "echo").node("j", "echo", join="all")
            .edge("a", "j").edge("b", "j"))
    graph = Graph(flow.build())
    store, watch = MemoryCoordinationStore(), dispatch.JoinWatch()
    a_to_j, b_to_j = graph.out_edges["a"][0], graph.out_edges["b"][0]
    first = dispatch.route(graph, "run", [semantics.Transition(a_to_j, 0, "A")], store, watch=watch)
    fired = dispatch.route(graph, "run", [semantics.Transition(b_to_j, 0, skipped=True)], store, watch=watch)
    again = dispatch.route(graph, "run", [semantics.Transition(b_to_j, 0, skipped=True)], store, watch=watch)
    late = dispatch.route(graph, "run", [semantics.Transition(b_to_j, 0, "B")], store, watch=watch)
    assert first == [] and fired == [dispatch.Start("j", 0, {"a": "A"})]
    assert again == [] and late == []


def test_the_frontier_replays_a_side_exit_run_as_complete() -> None:
    calls = Calls()
    store = MemoryContextStore()
    runner = LocalRunner(calls.registry, context_store=store)
    for passes, exit_at in ((0, 1), (2, 5), (3, 2)):
        blueprint = side_exit_loop(passes, exit_at).build()
        result = runner.run(blueprint)
        assert result.status == "completed", result.errors
        outputs = {(o.node_id, o.iteration): o for o in store.outputs(result.run_id)}
        replay = frontier(Graph(blueprint), result.run_id, outputs, None,
                          lambda key, ctx=result.context: ctx.get(key, MISSING))
        assert replay.complete and not replay.stalled and not replay.pending, (passes, exit_at)


def test_a_target_reached_by_one_of_two_edges_from_the_same_node_is_not_also_skipped() -> None:
    """a -x-> t and a -[true]-> t: a's action x takes the first; the second, not taken, must not
    skip t (nor what follows it) while t runs."""
    events: list[tuple[str, str]] = []
    registry = Registry()
    registry.register("act", lambda ctx: NodeResult(output="A", action="x"))
    registry.register("echo", lambda ctx: ctx.input)
    flow = (Flow("two").node("a", "act").node("t", "echo").node("u", "echo")
            .edge("a", "t", action="x").edge("a", "t", condition="true").edge("t", "u"))
    result = LocalRunner(registry, on_event=lambda name, data: events.append((name, data.get("nodeId", "")))
                         ).run(flow.build())
    assert result.status == "completed", result.errors
    assert [n for e, n in events if e == "node:start"] == ["a", "t", "u"]
    assert [n for e, n in events if e == "node:skipped"] == []
