"""Back edges that a pass does not take (SPEC §3.8): a back edge into the controller whose source
was skipped in that pass, or ran and did not take it, counts as skipped for that pass; when no
back edge arrived the loop is left there, along the exit that was taken, never `stalled`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from flowcraft_celery.engine import dispatch, semantics
from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.frontier import frontier
from flowcraft_celery.engine.registry import NodeResult, Registry
from flowcraft_celery.local.runner import LocalRunner
from flowcraft_celery.model.builder import Flow
from flowcraft_celery.model.graph import Graph
from flowcraft_celery.stores.base import MISSING
from flowcraft_celery.stores.memory import MemoryContextStore, MemoryCoordinationStore


class Calls:
    """Test nodes that log (node, iteration, input or what they decided)."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.log: list[tuple[str, int, Any]] = []
        reg = self.registry.register

        def echo(ctx: NodeContext) -> Any:
            self.log.append((ctx.node_id, ctx.iteration, ctx.input))
            return ctx.input

        def incr(ctx: NodeContext) -> int:
            value = (ctx.context.get("o") or 0) + 1
            ctx.context.set("o", value)
            self.log.append((ctx.node_id, ctx.iteration, value))
            return value

        def pick(ctx: NodeContext) -> NodeResult:
            """Branch `l` in the first passes, `r` once `o` reached 2."""
            action = "r" if (ctx.context.get("o") or 0) >= 2 else "l"
            self.log.append((ctx.node_id, ctx.iteration, action))
            return NodeResult(output=ctx.input, action=action)

        def leave(ctx: NodeContext) -> NodeResult:
            self.log.append((ctx.node_id, ctx.iteration, ctx.input))
            return NodeResult(output="R", action="exit")

        def broken(ctx: NodeContext) -> Any:
            self.log.append((ctx.node_id, ctx.iteration, ctx.input))
            raise RuntimeError(f"boom {ctx.node_id}")

        reg("echo", echo)
        reg("incr", incr)
        reg("pick", pick)
        reg("leave", leave)
        reg("broken", broken)

    def of(self, node_id: str) -> list[tuple[int, Any]]:
        return [(it, value) for n, it, value in self.log if n == node_id]


def two_back_edges(join: str, fallback: bool = False, outside: bool = False) -> Flow:
    """ctl -continue-> k; k routes by action to l or r; l -> ok -> ctl and r -> ctl are back edges,
    and r -exit-> out leaves the pass. With `fallback`, r always fails and its fallback `rf`
    returns the action; with `outside`, `out` also waits for `init` (so r -> out leaves the loop)
    and `fin` joins `out` with the controller's break exit."""
    flow = (Flow("two").node("init", "echo")
            .node("ctl", "loop-controller", params={"condition": "o < 10"}, join=join)
            .node("k", "pick").node("l", "incr").node("ok", "echo").node("out", "echo").node("done", "echo"))
    flow = flow.node("r", "broken", fallback="rf").node("rf", "leave") if fallback else flow.node("r", "leave")
    flow = (flow.edge("init", "ctl").edge("ctl", "k", action="continue")
            .edge("k", "l", action="l").edge("k", "r", action="r").edge("l", "ok").edge("ok", "ctl")
            .edge("r", "ctl").edge("r", "out", action="exit").edge("ctl", "done", action="break"))
    if outside:
        flow = flow.node("fin", "echo").edge("init", "out").edge("out", "fin").edge("done", "fin")
    return flow


def run(flow: Flow, calls: Calls, **context: Any) -> tuple[LocalRunner, Any]:
    runner = LocalRunner(calls.registry, context_store=MemoryContextStore())
    return runner, runner.run(flow.build(), {"o": 0, **context})


def replay(runner: LocalRunner, flow: Flow, run_id: str) -> Any:
    """The run's recorded outputs replayed, as the Celery runner decides completion."""
    store = runner.contexts
    assert isinstance(store, MemoryContextStore)
    context = store.snapshot(run_id)
    outputs = {(o.node_id, o.iteration): o for o in store.outputs(run_id)}
    return frontier(Graph(flow.build()), run_id, outputs, None, lambda key: context.get(key, MISSING))


@pytest.mark.parametrize("fallback", [False, True])
@pytest.mark.parametrize("join", ["any", "all"])
def test_a_pass_leaving_through_an_action_while_the_other_back_edge_was_skipped_leaves_the_loop(
        join: str, fallback: bool) -> None:
    calls = Calls()
    flow = two_back_edges(join, fallback)
    runner, result = run(flow, calls)
    assert result.status == "completed", result.errors
    assert result.errors == []
    assert calls.of("k") == [(0, "l"), (1, "l"), (2, "r")]
    assert [it for it, _ in calls.of("l")] == [0, 1] and [it for it, _ in calls.of("ok")] == [0, 1]
    ran = "rf" if fallback else "r"
    assert [it for it, _ in calls.of(ran)] == [2]
    assert calls.of("out") == [(2, "R")]  # in the loop's body: the pass that took it
    assert calls.of("done") == []  # the controller never broke: the loop was left through r
    assert result.context["o"] == 2 and result.context["_outputs.out"] == "R"
    assert replay(runner, flow, result.run_id).complete


@pytest.mark.parametrize("fallback", [False, True])
@pytest.mark.parametrize("join", ["any", "all"])
def test_the_exit_taken_leaves_the_loop_and_the_joins_after_it_run_once(join: str, fallback: bool) -> None:
    calls = Calls()
    flow = two_back_edges(join, fallback, outside=True)
    runner, result = run(flow, calls)
    assert result.status == "completed", result.errors
    assert calls.of("out") == [(0, {"init": None, "r": "R"})]  # outside the loop: iteration 0, once
    assert calls.of("fin") == [(0, {"out": {"init": None, "r": "R"}})]  # the break exit skipped
    assert calls.of("done") == []
    assert replay(runner, flow, result.run_id).complete


def test_a_branch_skipped_in_a_pass_lets_the_other_back_edge_continue_the_loop() -> None:
    # every pass goes one way: the branch not taken is skipped with its back edge, and the
    # controller fires on the other alone (an `all` controller included), then breaks
    calls = Calls()

    def alternate(ctx: NodeContext) -> NodeResult:
        return NodeResult(output=None, action="l" if (ctx.context.get("o") or 0) % 2 == 0 else "r")

    calls.registry.register("alternate", alternate)
    flow = (Flow("alt").node("init", "echo")
            .node("ctl", "loop-controller", params={"condition": "o < 4"}, join="all")
            .node("k", "alternate").node("l", "incr").node("ok", "echo").node("r", "incr").node("done", "echo")
            .edge("init", "ctl").edge("ctl", "k", action="continue")
            .edge("k", "l", action="l").edge("k", "r", action="r")
            .edge("l", "ok").edge("ok", "ctl").edge("r", "ctl").edge("ctl", "done", action="break"))
    runner, result = run(flow, calls)
    assert result.status == "completed", result.errors
    assert [it for it, _ in calls.of("l")] == [0, 2] and [it for it, _ in calls.of("r")] == [1, 3]
    assert calls.of("done") == [(0, None)]
    assert replay(runner, flow, result.run_id).complete

@contextlib.contextmanager
def counted_starts() -> Iterator[list[tuple[str, int]]]:
    """Every (node, iteration) the engine's `route` starts while the block runs."""
    starts: list[tuple[str, int]] = []
    original = dispatch.route

    def counting(*args: Any, **kwargs: Any) -> list[dispatch.Start]:
        out = original(*args, **kwargs)
        starts.extend((s.node_id, s.iteration) for s in out)
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dispatch, "route", counting)
        yield starts


def nested_two_back_edge_loop(name: str, calls: Calls, outer: str, pick: str, inner: str, inner_join: str) -> Flow:
    """The two-back-edge loop (`k` picks `l` -> `ok` -> `ctl` or `r` -> `ctl`, `r` -exit-> `out`)
    inside an outer loop counting `n`; the caller wires what leads back to `octl` and out of it."""
    calls.registry.register("reset", lambda ctx: ctx.context.set("o", 0))

    def count(ctx: NodeContext) -> int:
        value = (ctx.context.get("n") or 0) + 1
        ctx.context.set("n", value)
        return value

    calls.registry.register("count", count)
    return (Flow(name).node("start", "echo")
            .node("octl", "loop-controller", params={"condition": "n < 2"}, join=outer)
            .node("obody", "count").node("init", "reset")
            .node("ctl", "loop-controller", params={"condition": inner}, join=inner_join)
            .node("k", pick).node("l", "incr").node("ok", "echo").node("r", "leave").node("out", "echo")
            .node("done", "echo").node("fin", "echo")
            .edge("start", "octl").edge("octl", "obody", action="continue").edge("obody", "init")
            .edge("init", "ctl").edge("ctl", "k", action="continue")
            .edge("k", "l", action="l").edge("k", "r", action="r").edge("l", "ok").edge("ok", "ctl")
            .edge("r", "ctl").edge("r", "out", action="exit").edge("ctl", "done", action="break"))



@pytest.mark.parametrize("outer", ["any", "all"])
@pytest.mark.parametrize("unused_back_edge", [False, True])
def test_an_inner_loop_left_through_an_action_goes_on_in_the_outer_pass(outer: str, unused_back_edge: bool) -> None:
    # the two-back-edge loop nested in an outer loop: each outer pass leaves it through r, and
    # r -> out -> octl goes on in the outer loop (out runs after the inner controller's next
    # pass was skipped: its back edge into octl must not be skipped early). With
    # `unused_back_edge`, l -> octl is never taken: skipped for each outer pass once the inner
    # loop is over, so an `all` outer controller fires on out alone.
    calls = Calls()
    flow = nested_two_back_edge_loop("nest2", calls, outer, pick="pick", inner="o < 10", inner_join="all")
    flow = flow.edge("out", "octl").edge("octl", "fin", action="break")
    if unused_back_edge:
        flow = flow.edge("l", "octl", condition="false")
    with counted_starts() as starts:
        runner, result = run(flow, calls, n=0)
    assert result.status == "completed", result.errors
    graph = Graph(flow.build())
    assert [graph.iteration_label("r", it) for it, _ in calls.of("r")] == ["0.2", "1.2"]
    assert [graph.iteration_label("out", it) for it, _ in calls.of("out")] == ["0.2", "1.2"]
    assert [graph.iteration_label("l", it) for it, _ in calls.of("l")] == ["0.0", "0.1", "1.0", "1.1"]
    assert calls.of("fin") == [(0, None)] and calls.of("done") == []
    assert sorted(it for n, it in starts if n == "octl") == [0, 1, 2]  # each outer pass started once
    assert result.context["n"] == 2
    assert replay(runner, flow, result.run_id).complete


def test_a_skip_after_the_same_predecessors_arrival_starts_nothing_again() -> None:
    # leaving the loop through r -> out, then skipping the controller's next pass, skips the
    # loop's exits, r -> out included: that skip must not start `out` a second time
    graph = Graph(two_back_edges("all", outside=True).build())
    coordination = MemoryCoordinationStore()
    (exit_edge,) = [e for e in graph.edges if (e.source, e.target) == ("r", "out")]
    (init_edge,) = [e for e in graph.edges if (e.source, e.target) == ("init", "out")]

    def route(*transitions: semantics.Transition) -> list[tuple[str, int, Any]]:
        starts = dispatch.route(graph, "run", list(transitions), coordination)
        return [(s.node_id, s.iteration, s.value) for s in starts]

    assert route(semantics.Transition(init_edge, 0, None)) == []
    assert route(semantics.Transition(exit_edge, 0, "R")) == [("out", 0, {"init": None, "r": "R"})]
    assert route(semantics.Transition(exit_edge, 0, skipped=True)) == []
    assert route(semantics.Transition(exit_edge, 0, "R")) == [("out", 0, {"init": None, "r": "R"})]  # a redelivery


def test_the_exit_taken_is_started_once_in_a_run() -> None:
    calls = Calls()
    flow = two_back_edges("any", outside=True)
    with counted_starts() as starts:
        _, result = run(flow, calls)
    assert result.status == "completed", result.errors
    assert starts.count(("out", 0)) == 1 and starts.count(("fin", 0)) == 1


@pytest.mark.parametrize("outer", ["any", "all"])
def test_an_off_cycle_back_edge_never_reached_never_ends_the_run_falsely_completed(outer: str) -> None:
    # out (off the inner loop's cycle) never runs: each inner loop ends by its controller's break,
    # and done -> octl continues the outer loop. With `any`, octl fires on done; with `all`, the
    # back edge from out is not settled (docs/language/loops-and-batches.md): the run may end
    # `stalled`, but never `completed` without its outer passes
    calls = Calls()
    calls.registry.register("always_l", lambda ctx: NodeResult(output=None, action="l"))
    flow = nested_two_back_edge_loop("offcycle", calls, outer, pick="always_l", inner="o < 2", inner_join="any")
    flow = flow.edge("out", "octl").edge("done", "octl").edge("octl", "fin", action="break")
    _, result = run(flow, calls, n=0)
    assert calls.of("out") == []
    if outer == "any":
        assert result.status == "completed", result.errors
        assert calls.of("fin") == [(0, None)] and result.context["n"] == 2
    else:
        assert (result.status == "completed" and calls.of("fin") == [(0, None)]) or result.status == "stalled"
        assert result.status != "completed" or result.context["n"] == 2
