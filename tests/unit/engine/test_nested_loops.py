"""Loops nested in loops (SPEC §3.8): each outer pass runs the inner loop afresh, joins in the
outer body fire once per outer pass with that pass's data, and a run never reports `completed`
while a join it reached has not run."""

from __future__ import annotations

from typing import Any

import pytest

from flowcraft_celery.engine import dispatch, semantics
from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.frontier import frontier
from flowcraft_celery.engine.registry import NodeResult, Registry
from flowcraft_celery.local.runner import LocalRunner
from flowcraft_celery.model import iterations
from flowcraft_celery.model.blueprint import EdgeDefinition
from flowcraft_celery.model.builder import Flow
from flowcraft_celery.model.graph import Graph
from flowcraft_celery.stores.base import MISSING, JoinState, RecordedOutput
from flowcraft_celery.stores.memory import MemoryContextStore, MemoryCoordinationStore


class Calls:
    """Test nodes that log (node, iteration, input)."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.log: list[tuple[str, int, Any]] = []
        reg = self.registry.register

        def counter(key: str) -> Any:
            def incr(ctx: NodeContext) -> int:
                value = (ctx.context.get(key) or 0) + 1
                ctx.context.set(key, value)
                self.log.append((ctx.node_id, ctx.iteration, value))
                return value
            return incr

        def echo(ctx: NodeContext) -> Any:
            self.log.append((ctx.node_id, ctx.iteration, ctx.input))
            return ctx.input

        def spawn(ctx: NodeContext) -> NodeResult:
            self.log.append((ctx.node_id, ctx.iteration, ctx.input))
            nodes = [{"id": f"{ctx.node_id}_{i}", "uses": "echo", "input": ctx.input * 10 + i} for i in range(2)]
            return NodeResult(output=ctx.input, dynamic_nodes=nodes)

        reg("inc_o", counter("o"))
        reg("inc_i", counter("i"))
        reg("zero_i", lambda ctx: ctx.context.set("i", 0))
        reg("echo", echo)
        reg("spawn", spawn)

    def of(self, node_id: str) -> list[tuple[int, Any]]:
        return [(it, value) for n, it, value in self.log if n == node_id]


def nested(outer: str = "o < 3", inner: str = "i < o - 1") -> Flow:
    """An outer loop whose body forks: an inner loop (reset each outer pass) on one branch, a
    plain node on the other, joined by an all-join `j` that leads back to the outer controller."""
    return (Flow("nest").node("init", "echo")
            .node("octl", "loop-controller", params={"condition": outer}, join="any")
            .node("obody", "inc_o").node("zi", "zero_i")
            .node("ictl", "loop-controller", params={"condition": inner}, join="any")
            .node("ibody", "inc_i").node("iread", "echo", inputs="i").node("plain", "echo")
            .node("j", "echo").node("done", "echo")
            .edge("init", "octl").edge("octl", "obody", action="continue").edge("obody", "zi").edge("zi", "ictl")
            .edge("ictl", "ibody", action="continue").edge("ibody", "ictl").edge("ictl", "iread", action="break")
            .edge("obody", "plain").edge("iread", "j").edge("plain", "j").edge("j", "octl")
            .edge("octl", "done", action="break"))


def test_iterations_encode_passes_in_digit_groups_and_keep_their_order() -> None:
    assert iterations.width_for(1) == 12 and iterations.width_for(2) == 6 and iterations.width_for(3) == 4
    assert iterations.encode((), 6) == 0 and iterations.encode((7,), 6) == 7
    assert iterations.encode((2, 5), 6) == 2_000_005
    assert iterations.decode(2_000_005, 2, 6) == (2, 5) and iterations.decode(7, 1, 6) == (7,)
    assert iterations.decode(0, 0, 6) == ()
    ordered = [(0, 0), (0, 1), (0, 999_999), (1, 0), (1, 3), (12, 0)]
    encoded = [iterations.encode(p, 6) for p in ordered]
    assert encoded == sorted(encoded)  # stores show the highest iteration as the latest output
    assert [iterations.decode(e, 2, 6) for e in encoded] == ordered
    assert iterations.label((2, 5)) == "2.5" and iterations.label(()) == "0"
    with pytest.raises(iterations.IterationOverflowError, match="at most 1000000 passes"):
        iterations.encode((0, 1_000_000), 6)
    with pytest.raises(iterations.IterationOverflowError, match="limit"):
        iterations.encode((iterations.MAX_ITERATION,), 6)


def test_a_nodes_iteration_counts_the_passes_of_every_loop_around_it() -> None:
    graph = Graph(nested().build())
    assert graph.loops_of("ibody") == ("octl", "ictl") and graph.loops_of("ictl") == ("octl", "ictl")
    assert graph.loops_of("j") == ("octl",) and graph.loops_of("done") == () and graph.loops_of("init") == ()
    assert graph.iteration_width == 6
    at = graph.iteration_at

    def target(source: str, target: str, iteration: int, **kw: Any) -> int:
        return semantics.target_iteration(graph, EdgeDefinition(source, target, **kw), iteration)

    assert target("zi", "ictl", at((2,))) == at((2, 0))  # entering the inner loop: its pass 0
    assert target("ibody", "ictl", at((2, 4))) == at((2, 5))  # inner back edge: next inner pass
    assert target("ictl", "iread", at((2, 5)), action="break") == at((2,))  # leaving: back to the outer pass
    assert target("j", "octl", at((2,))) == at((3,))  # outer back edge
    assert target("octl", "done", at((3,)), action="break") == 0
    assert graph.iteration_label("ibody", at((2, 5))) == "2.5"
    with pytest.raises(semantics.LoopBoundError, match="at most 1000000 passes"):
        target("ibody", "ictl", at((0, 999_999)))


def test_a_join_in_the_outer_body_fires_once_per_outer_pass_with_that_pass_data() -> None:
    calls = Calls()
    result = LocalRunner(calls.registry).run(nested().build(), {"o": 0})
    assert result.status == "completed", result.errors
    at = Graph(nested().build()).iteration_at
    # the inner loop restarts in each outer pass: 0, 1, then 2 passes
    assert calls.of("ibody") == [(at((1, 0)), 1), (at((2, 0)), 1), (at((2, 1)), 2)]
    assert calls.of("iread") == [(0, 0), (1, 1), (2, 2)]
    assert calls.of("j") == [(0, {"iread": 0, "plain": 1}), (1, {"iread": 1, "plain": 2}),
                             (2, {"iread": 2, "plain": 3})]
    assert calls.of("done") == [(0, None)]


def test_an_edge_out_of_both_loops_stays_open_until_the_outer_loop_is_left() -> None:
    calls = Calls()
    # ibody -> fin leaves both loops; it is taken only in the last outer pass, after the inner
    # loop was left in earlier passes: that must not have settled `fin` without it
    flow = (nested().node("fin", "echo").edge("init", "fin")
            .edge("ibody", "fin", condition="o === 3 && i === 2", transform="'late'"))
    result = LocalRunner(calls.registry).run(flow.build(), {"o": 0})
    assert result.status == "completed", result.errors
    assert calls.of("fin") == [(0, {"init": None, "ibody": "late"})]
    calls = Calls()
    never = nested().node("fin", "echo").edge("init", "fin").edge("ibody", "fin", condition="false")
    result = LocalRunner(calls.registry).run(never.build(), {"o": 0})
    assert result.status == "completed", result.errors
    assert calls.of("fin") == [(0, {"init": None})]  # settled once the outer loop was left


def test_a_join_inside_the_inner_body_fires_once_per_inner_pass() -> None:
    calls = Calls()
    flow = (nested().node("a", "echo").node("b", "echo").node("ij", "echo")
            .edge("ibody", "a").edge("ibody", "b").edge("a", "ij").edge("b", "ij"))
    result = LocalRunner(calls.registry).run(flow.build(), {"o": 0})
    assert result.status == "completed", result.errors
    at = Graph(flow.build()).iteration_at
    assert calls.of("ij") == [(at((1, 0)), {"a": 1, "b": 1}), (at((2, 0)), {"a": 1, "b": 1}),
                              (at((2, 1)), {"a": 2, "b": 2})]


def test_dynamic_nodes_inside_an_inner_loop_run_in_each_inner_pass_with_its_inputs() -> None:
    calls = Calls()
    flow = (Flow("nd").node("init", "echo").edge("init", "octl")
            .node("octl", "loop-controller", params={"condition": "o < 2"}, join="any")
            .node("obody", "inc_o").node("zi", "zero_i")
            .node("ictl", "loop-controller", params={"condition": "i < o"}, join="any")
            .node("ibody", "inc_i").node("sp", "spawn")
            .edge("octl", "obody", action="continue").edge("obody", "zi").edge("zi", "ictl")
            .edge("ictl", "ibody", action="continue").edge("ibody", "sp").edge("sp", "ictl")
            .edge("ictl", "octl", action="break"))
    result = LocalRunner(calls.registry).run(flow.build(), {"o": 0})
    assert result.status == "completed", result.errors
    at = Graph(flow.build()).iteration_at
    assert calls.of("sp_0") == [(at((0, 0)), 10), (at((1, 0)), 10), (at((1, 1)), 20)]
    assert calls.of("sp_1") == [(at((0, 0)), 11), (at((1, 0)), 11), (at((1, 1)), 21)]


def test_a_batch_inside_an_inner_loop_gathers_each_inner_pass_own_items() -> None:
    calls = Calls()
    calls.registry.register("plus", lambda ctx: ctx.input + 100)
    flow = (nested(outer="o < 2", inner="i < o")
            .node("sc", "batch-scatter", params={"workerUsesKey": "plus", "gatherNodeId": "ga"})
            .node("ga", "batch-gather", params={"gatherNodeId": "ga", "outputKey": "got"})
            .edge("ibody", "sc", transform="[input, context.o * 10]").edge("sc", "ga"))
    runner = LocalRunner(calls.registry)
    result = runner.run(flow.build(), {"o": 0})
    assert result.status == "completed", result.errors
    at = Graph(flow.build()).iteration_at
    gathered = {p: runner.contexts.get_output(result.run_id, "ga", at(p)) for p in [(0, 0), (1, 0), (1, 1)]}
    assert {p: o.output for p, o in gathered.items() if o} == {(0, 0): [101, 110], (1, 0): [101, 120],
                                                                (1, 1): [102, 120]}
    assert result.context["got"] == [102, 120]


def test_the_frontier_replays_a_nested_run_as_complete_and_lists_its_join_scopes() -> None:
    calls = Calls()
    store = MemoryContextStore()
    coordination = Scopes()
    runner = LocalRunner(calls.registry, context_store=store, coordination=coordination)
    flow = (nested().node("fb", "echo").node("fx", "echo").node("fj", "echo").node("plain2", "echo", fallback="fb")
            .edge("obody", "plain2").edge("fb", "fj").edge("fb", "fx").edge("fx", "fj"))  # skips of an unused fallback
    result = runner.run(flow.build(), {"o": 0})
    assert result.status == "completed", result.errors
    outputs = {(o.node_id, o.iteration): o for o in store.outputs(result.run_id)}
    replay = frontier(Graph(flow.build()), result.run_id, outputs, None,
                      lambda key: result.context.get(key, MISSING))
    assert replay.complete and not replay.stalled and not replay.pending
    tokens = [f"{n}@{it}" for n, it in outputs]
    scopes = set(dispatch.join_scopes(Graph(flow.build()), result.run_id, tokens))
    assert coordination.used and coordination.used <= scopes  # what retention expires covers every join used


class Scopes(MemoryCoordinationStore):
    """Remembers the join scopes used."""

    def __init__(self) -> None:
        super().__init__()
        self.used: set[str] = set()

    def arrive(self, scope: str, predecessor: str, value: Any, skipped: bool = False,
               values_from: int = 0) -> JoinState:
        self.used.add(scope)
        return super().arrive(scope, predecessor, value, skipped, values_from)


def two_back_edges() -> Flow:
    """A controller that waits for all of two back edges, one of which is never taken."""
    return (Flow("st").node("init", "echo")
            .node("ctl", "loop-controller", params={"condition": "o < 3"}, join="all")
            .node("body", "inc_o").node("a", "echo").node("b", "echo").node("done", "echo")
            .edge("init", "ctl").edge("ctl", "body", action="continue").edge("body", "a").edge("body", "b")
            .edge("a", "ctl").edge("b", "ctl", condition="o < 1").edge("ctl", "done", action="break"))


def test_a_back_edge_not_taken_settles_the_heads_next_pass() -> None:
    calls = Calls()
    result = LocalRunner(calls.registry).run(two_back_edges().build(), {"o": 0})
    assert result.status == "completed", result.errors
    assert [it for it, _ in calls.of("a")] == [0, 1, 2] and calls.of("done") == [(0, None)]


def test_a_loop_whose_back_edge_is_not_taken_is_left_and_the_join_after_it_runs() -> None:
    calls = Calls()
    flow = (Flow("lb").node("init", "echo").node("ctl", "loop-controller", params={"condition": "true"}, join="any")
            .node("body", "inc_o").node("done", "echo").node("other", "echo").node("j", "echo")
            .edge("init", "ctl").edge("ctl", "body", action="continue").edge("body", "ctl", condition="o < 2")
            .edge("ctl", "done", action="break").edge("init", "other").edge("done", "j").edge("other", "j"))
    result = LocalRunner(calls.registry).run(flow.build(), {"o": 0})
    assert result.status == "completed", result.errors
    assert len(calls.of("body")) == 2 and calls.of("done") == []
    assert calls.of("j") == [(0, {"other": None})]  # `done` skipped once the loop was left


def test_a_join_after_a_fallback_that_was_not_needed_runs() -> None:
    calls = Calls()
    flow = (Flow("fb").node("a", "echo").node("n", "echo", fallback="f").node("f", "echo").node("j", "echo")
            .edge("a", "j").edge("f", "j"))
    result = LocalRunner(calls.registry).run(flow.build())
    assert result.status == "completed", result.errors
    assert calls.of("f") == [] and calls.of("j") == [(0, {"a": None})]


class LosesAnArrival(MemoryCoordinationStore):
    """A coordination store that loses one predecessor's arrival at a join."""

    def __init__(self, predecessor: str) -> None:
        super().__init__()
        self.predecessor = predecessor

    def arrive(self, scope: str, predecessor: str, value: Any, skipped: bool = False,
               values_from: int = 0) -> JoinState:
        if predecessor == self.predecessor:
            return super().arrive(scope + ":elsewhere", predecessor, value, skipped, values_from)
        return super().arrive(scope, predecessor, value, skipped, values_from)


def test_a_run_with_a_join_reached_that_never_fired_is_stalled_not_completed() -> None:
    calls = Calls()
    flow = Flow("lost").node("a", "echo").node("b", "echo").node("j", "echo").edge("a", "j").edge("b", "j")
    runner = LocalRunner(calls.registry, coordination=LosesAnArrival("b"))
    result = runner.run(flow.build())
    assert result.status == "stalled"
    assert [(e["nodeId"], e["type"], e["iteration"]) for e in result.errors] == [("j", "StalledJoin", 0)]
    assert "'a', 'b' reached it, yet the coordination store did not let it fire" in result.errors[0]["message"]
    assert runner.statuses.get(result.run_id)["status"] == "stalled"  # type: ignore[index]
    assert calls.of("j") == []


def test_the_replay_finds_a_join_it_cannot_fire_stuck_not_complete() -> None:
    # an edge from a node that does not exist (no validation here): `j` waits for it for ever
    graph = Graph(Flow("g").node("a", "echo").node("j", "echo").edge("a", "j").edge("ghost", "j").build())
    outputs = {("a", 0): RecordedOutput("a", 0, "A")}
    replay = frontier(graph, "r", outputs, None, lambda key: MISSING)
    assert not replay.pending and not replay.complete and replay.stuck
    assert [(s.node_id, s.iteration, s.arrived, s.missing) for s in replay.stalled] == [("j", 0, ("a",), ("ghost",))]
    assert replay.stalled[0].to_error(graph)["type"] == "StalledJoin"


def test_join_watch_settles_a_join_that_fired_or_was_skipped() -> None:
    graph = Graph(Flow("w").node("a", "echo").node("b", "echo").node("j", "echo").edge("a", "j").edge("b", "j")
                  .build())
    watch = dispatch.JoinWatch()
    watch.arrive("j", 0, "a", False)
    assert [s.missing for s in watch.stalled(graph)] == [("b",)]
    watch.arrive("j", 0, "b", False)
    watch.fire("j", 0)
    assert watch.stalled(graph) == []


def test_resuming_a_child_run_returns_the_childs_result_and_resumes_its_parent() -> None:
    child = Flow("kid").node("wait", "wait").node("after", "echo").edge("wait", "after").build()
    parent = Flow("par").node("sub", "subflow", params={"blueprintId": "kid"}).node("next", "echo")
    runner = LocalRunner(Calls().registry, {"kid": child})
    started = runner.run(parent.edge("sub", "next").build())
    assert started.status == "awaiting"
    child_id = runner._runs[started.run_id].children["sub"]
    resumed = runner.resume(child_id, None, "go")
    assert resumed.run_id == child_id and resumed.status == "completed"
    assert resumed.context["_outputs.after"] == "go"
    assert runner.result(started.run_id).status == "completed"
    with pytest.raises(KeyError):
        runner.result("nope")


def replayed_complete(runner: LocalRunner, graph: Graph, run_id: str) -> bool:
    """Whether the run's recorded outputs, replayed (as the Celery runner completes a run), leave
    nothing pending and no join stalled."""
    store = runner.contexts
    assert isinstance(store, MemoryContextStore)
    context = store.snapshot(run_id)
    outputs = {(o.node_id, o.iteration): o for o in store.outputs(run_id)}
    replay = frontier(graph, run_id, outputs, None, lambda key: context.get(key, MISSING))
    return replay.complete


def inner_join_on_the_cycle(join: str, controllers: str = "any") -> Flow:
    """Outer loop (`o < 2`) around an inner loop (`i < 3`) whose body forks and joins on the way
    back to the inner controller (k -> p1, p2 -> j -> after -> ictl); the inner controller's
    `break` edge is the outer loop's back edge."""
    return (Flow("inj").node("init", "echo")
            .node("octl", "loop-controller", params={"condition": "o < 2"}, join=controllers)
            .node("obody", "inc_o").node("zi", "zero_i")
            .node("ictl", "loop-controller", params={"condition": "i < 3"}, join=controllers)
            .node("k", "inc_i").node("p1", "echo").node("p2", "echo").node("j", "echo", join=join)
            .node("after", "echo").node("done", "echo")
            .edge("init", "octl").edge("octl", "obody", action="continue").edge("obody", "zi").edge("zi", "ictl")
            .edge("ictl", "k", action="continue").edge("k", "p1").edge("k", "p2").edge("p1", "j").edge("p2", "j")
            .edge("j", "after").edge("after", "ictl")
            .edge("ictl", "octl", action="break").edge("octl", "done", action="break"))


@pytest.mark.parametrize("controllers", ["any", "all"])
@pytest.mark.parametrize("join", ["all", "any"])
def test_a_join_on_the_inner_cycle_fires_in_every_inner_pass_of_every_outer_pass(join: str, controllers: str) -> None:
    # once each inner pass had gone through its controller, the inner controller's `continue`
    # used to skip the outer loop's next pass early: the second outer pass ran p1 and p2 but
    # never `j`, nothing after it, and the run still reported `completed`
    calls = Calls()
    flow = inner_join_on_the_cycle(join, controllers)
    graph = Graph(flow.build())
    runner = LocalRunner(calls.registry)
    result = runner.run(flow.build(), {"o": 0})
    assert result.status == "completed", result.errors
    label = graph.iteration_label
    passes = ["0.0", "0.1", "0.2", "1.0", "1.1", "1.2"]
    assert [label("j", it) for it, _ in calls.of("j")] == passes
    assert [label("after", it) for it, _ in calls.of("after")] == passes
    expected = [{"p1": n, "p2": n} for n in (1, 2, 3)] * 2 if join == "all" else [1, 2, 3] * 2
    assert [value for _, value in calls.of("j")] == expected
    assert calls.of("done") == [(0, None)]
    assert result.context["o"] == 2 and result.context["i"] == 3
    assert replayed_complete(runner, graph, result.run_id)


@pytest.mark.parametrize("controllers", ["any", "all"])
@pytest.mark.parametrize("join", ["all", "any"])
@pytest.mark.parametrize("unused_back_edges", [False, True])
def test_three_loops_deep_a_join_in_the_innermost_body_fires_in_every_innermost_pass(
        join: str, controllers: str, unused_back_edges: bool) -> None:
    calls = Calls()
    reg = calls.registry.register

    def counter(key: str, reset: str | None) -> Any:
        def incr(ctx: NodeContext) -> int:
            value = (ctx.context.get(key) or 0) + 1
            ctx.context.set(key, value)
            if reset:
                ctx.context.set(reset, 0)
            calls.log.append((ctx.node_id, ctx.iteration, value))
            return value
        return incr

    reg("inc_a", counter("a", "b"))
    reg("inc_b", counter("b", "c"))
    reg("inc_c", counter("c", None))
    flow = (Flow("deep").node("init", "echo")
            .node("actl", "loop-controller", params={"condition": "a < 2"}, join=controllers).node("abody", "inc_a")
            .node("bctl", "loop-controller", params={"condition": "b < 2"}, join=controllers).node("bbody", "inc_b")
            .node("cctl", "loop-controller", params={"condition": "c < 3"}, join=controllers).node("k", "inc_c")
            .node("p1", "echo").node("p2", "echo").node("j", "echo", join=join).node("after", "echo")
            .node("done", "echo")
            .edge("init", "actl").edge("actl", "abody", action="continue").edge("abody", "bctl")
            .edge("bctl", "bbody", action="continue").edge("bbody", "cctl")
            .edge("cctl", "k", action="continue").edge("k", "p1").edge("k", "p2").edge("p1", "j").edge("p2", "j")
            .edge("j", "after").edge("after", "cctl")
            .edge("cctl", "bctl", action="break").edge("bctl", "actl", action="break")
            .edge("actl", "done", action="break"))
    if unused_back_edges:  # back edges from the innermost body into the outer heads, never taken
        flow = flow.edge("after", "actl", condition="false").edge("j", "bctl", condition="c > 99")
    graph = Graph(flow.build())
    runner = LocalRunner(calls.registry)
    result = runner.run(flow.build(), {"a": 0, "b": 0, "c": 0})
    assert result.status == "completed", result.errors
    innermost = [f"{a}.{b}.{c}" for a in range(2) for b in range(2) for c in range(3)]
    assert [graph.iteration_label("j", it) for it, _ in calls.of("j")] == innermost
    assert [graph.iteration_label("after", it) for it, _ in calls.of("after")] == innermost
    assert [graph.iteration_label("bbody", it) for it, _ in calls.of("bbody")] == ["0.0", "0.1", "1.0", "1.1"]
    assert calls.of("done") == [(0, None)]
    assert (result.context["a"], result.context["b"], result.context["c"]) == (2, 2, 3)
    assert replayed_complete(runner, graph, result.run_id)
