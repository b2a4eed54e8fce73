"""Fallback chains (SPEC §3.9): a fallback node that fails may have its own `config.fallback`;
the last one that succeeds drives the edges of every node of the chain it stood in for."""

from __future__ import annotations

from collections import Counter
from typing import Any

from flowcraft_celery.engine import semantics
from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.dispatch import join_scopes
from flowcraft_celery.engine.frontier import frontier
from flowcraft_celery.engine.registry import NodeResult, Registry
from flowcraft_celery.local.runner import LocalRunner
from flowcraft_celery.model.builder import Flow
from flowcraft_celery.model.graph import Graph, start_nodes
from flowcraft_celery.stores.base import MISSING, RecordedOutput


def after_success(graph: Graph, node_id: str, iteration: int, result: NodeResult,
                  lookup: semantics.Lookup) -> list[semantics.Transition]:
    """The transitions of a node execution completing now: decided, then followed."""
    decision = semantics.decide(graph, node_id, iteration, result, lookup)
    return semantics.after_decision(graph, iteration, result.output, decision)


def chain(*extra: str) -> Flow:
    """a -> b -> c by `config.fallback`; a leads to `next`, b to `bside`, c to `cside`."""
    flow = (Flow("chain").node("a", "down", fallback="b").node("b", "down", fallback="c").node("c", "ok")
            .node("next", "echo").node("bside", "echo").node("cside", "echo")
            .edge("a", "next").edge("b", "bside").edge("c", "cside"))
    for node_id in extra:
        flow.node(node_id, "echo")
    return flow


def nothing(_: str) -> Any:
    return MISSING


class Calls:
    """Counts invocations per node; `down` always fails, `ok` returns its node id."""

    def __init__(self, failing: tuple[str, ...] = ()) -> None:
        self.count: Counter[str] = Counter()
        self.registry = Registry()
        failing_ids = set(failing)

        @self.registry.node("down")
        def down(ctx: NodeContext) -> Any:
            self.count[ctx.node_id] += 1
            raise RuntimeError(f"boom {ctx.node_id}")

        @self.registry.node("ok")
        def ok(ctx: NodeContext) -> Any:
            self.count[ctx.node_id] += 1
            if ctx.node_id in failing_ids:
                raise RuntimeError(f"boom {ctx.node_id}")
            return f"from {ctx.node_id}"

        @self.registry.node("echo")
        def echo(ctx: NodeContext) -> Any:
            self.count[ctx.node_id] += 1
            return ctx.input


# -- the graph's view of a chain --------------------------------------------------------------------


def test_a_chain_is_read_both_ways() -> None:
    graph = Graph(chain().build())
    assert graph.fallback_chain("c") == ["b", "a"]
    assert graph.fallback_chain("b") == ["a"]
    assert graph.fallback_chain("a") == [] and graph.fallback_chain("next") == []
    assert graph.fallback_root("c") == "a" and graph.fallback_root("b") == "a" and graph.fallback_root("a") == "a"
    assert graph.fallbacks_below("a") == ["b", "c"]
    assert graph.fallbacks_below("b") == ["c"] and graph.fallbacks_below("c") == []
    assert start_nodes(graph) == ["a"]


def test_a_chain_that_comes_back_ends_instead_of_looping() -> None:
    flow = Flow("loop").node("a", "x", fallback="b").node("b", "x", fallback="c").node("c", "x", fallback="b")
    graph = Graph(flow.build())
    assert graph.fallbacks_below("a") == ["b", "c"]
    assert graph.fallbacks_below("c") == ["b"]
    assert graph.fallback_chain("c") == ["b"] and graph.fallback_chain("b") == ["c"]


def test_a_fallback_named_by_two_nodes_is_shared() -> None:
    flow = Flow("s").node("a", "x", fallback="f").node("b", "x", fallback="f").node("f", "x").node("g", "x",
                                                                                                  fallback="h")
    graph = Graph(flow.node("h", "x").build())
    assert graph.shared_fallbacks == frozenset({"f"})


# -- the engine's decisions -------------------------------------------------------------------------


def test_the_last_fallback_drives_the_edges_of_the_whole_chain() -> None:
    graph = Graph(chain().build())
    taken, not_taken = semantics.choose_edges(graph, "c", NodeResult(output=1), nothing)
    assert sorted(e.target for e in taken) == ["bside", "cside", "next"] and not_taken == []
    arrivals = after_success(graph, "c", 0, NodeResult(output=1), nothing)
    assert sorted((t.target, t.predecessor, t.skipped) for t in arrivals) == [
        ("bside", "b", False), ("cside", "c", False), ("next", "a", False)]


def test_a_fallback_in_the_middle_drives_its_own_edges_and_its_originals() -> None:
    graph = Graph(chain().build())
    transitions = after_success(graph, "b", 0, NodeResult(output=1), nothing)
    assert sorted((t.target, t.skipped) for t in transitions) == [
        ("bside", False), ("cside", True), ("next", False)]  # c's edge is a dead path


def test_a_node_that_succeeds_settles_the_edges_of_every_fallback_below_it() -> None:
    graph = Graph(chain().build())
    transitions = after_success(graph, "a", 0, NodeResult(output=1), nothing)
    assert sorted((t.target, t.skipped) for t in transitions) == [
        ("bside", True), ("cside", True), ("next", False)]
    skipped = semantics.after_skip(graph, "a", 0)
    assert sorted(t.target for t in skipped) == ["bside", "cside", "next"]
    assert all(t.skipped for t in skipped)


def test_the_dead_paths_stop_at_a_fallback_another_node_still_may_need() -> None:
    flow = (Flow("s").node("a", "x", fallback="b").node("b", "x", fallback="f").node("o", "x", fallback="f")
            .node("f", "x").node("j1", "x").node("j2", "x").edge("b", "j1").edge("f", "j2"))
    graph = Graph(flow.build())
    transitions = after_success(graph, "a", 0, NodeResult(output=1), nothing)
    assert [(t.target, t.skipped) for t in transitions] == [("j1", True)]


def test_the_chain_runs_in_the_iteration_of_the_node_it_began_with() -> None:
    flow = (Flow("l").node("init", "x").node("ctl", "loop-controller", params={"condition": "n < 3"}, join="any")
            .node("a", "x", fallback="b").node("b", "x", fallback="c").node("c", "x").node("done", "x")
            .edge("init", "ctl").edge("ctl", "a", action="continue").edge("a", "ctl").edge("ctl", "done",
                                                                                          action="break"))
    graph = Graph(flow.build())
    back = [t for t in after_success(graph, "c", 4, NodeResult(output=1), nothing) if not t.skipped]
    assert [(t.target, t.iteration, t.back) for t in back] == [("ctl", 5, True)]


def test_join_scopes_follow_the_edges_of_the_whole_chain() -> None:
    flow = chain().node("other", "echo").node("j", "echo").edge("other", "j").edge("c", "j")
    scopes = join_scopes(Graph(flow.build()), "r", ["a@0"])
    assert "r:j@0" in scopes


def test_replay_counts_the_chains_output_for_the_node_it_began_with() -> None:
    graph = Graph(chain().build())
    outputs = {("c", 0): RecordedOutput("c", 0, "from c")}  # the copies for a and b were never written
    replay = frontier(graph, "r", outputs, None, nothing)
    assert "a@0" in replay.finished
    assert replay.pending["next@0"].value == "from c"


# -- on the local runner ----------------------------------------------------------------------------


def test_a_chain_on_the_local_runner_records_and_drives_for_every_member() -> None:
    calls = Calls()
    result = LocalRunner(calls.registry).run(chain().build())
    assert result.status == "completed", result.errors
    assert {k: result.context[f"_outputs.{k}"] for k in ("a", "b", "c", "next", "bside", "cside")} == dict.fromkeys(
        ("a", "b", "c", "next", "bside", "cside"), "from c")
    assert calls.count == Counter({"a": 1, "b": 1, "c": 1, "next": 1, "bside": 1, "cside": 1})


def test_retries_count_per_member_of_the_chain() -> None:
    flow = (Flow("r").node("a", "down", fallback="b", max_retries=3).node("b", "down", fallback="c", max_retries=2)
            .node("c", "ok", max_retries=2).node("next", "echo").edge("a", "next"))
    calls = Calls(failing=())
    events: list[tuple[str, Any]] = []
    result = LocalRunner(calls.registry, on_event=lambda e, d: events.append((e, d.get("nodeId")))).run(flow.build())
    assert result.status == "completed", result.errors
    assert calls.count == Counter({"a": 3, "b": 2, "c": 1, "next": 1})
    assert [n for e, n in events if e == "node:fallback"] == ["a", "b"]


def test_a_chain_where_every_member_fails_fails_the_run_with_the_last_error() -> None:
    calls = Calls(failing=("c",))
    result = LocalRunner(calls.registry).run(chain().build())
    assert result.status == "failed"
    assert [e["nodeId"] for e in result.errors] == ["c"] and result.errors[0]["message"] == "boom c"
    assert "next" not in calls.count and "bside" not in calls.count
