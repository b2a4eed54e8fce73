"""Properties of loading, validation and the local runner over generated blueprints (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.frontier import frontier
from flowcraft_celery.engine.registry import NodeResult, Registry
from flowcraft_celery.expressions.evaluator import ExpressionError, validate_expression
from flowcraft_celery.local.runner import LocalRunner
from flowcraft_celery.model.blueprint import Blueprint, BlueprintFormatError
from flowcraft_celery.model.graph import Graph
from flowcraft_celery.model.strict_json import non_finite_path
from flowcraft_celery.model.validation import ValidationIssue, validate
from flowcraft_celery.stores.base import MISSING
from flowcraft_celery.stores.memory import MemoryContextStore

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

IDS = ["a", "b", "c", "d", "", "a.b", "_x"]
USES = ["echo", "missing", "wait", "sleep", "subflow", "loop-controller", "batch-scatter", "batch-gather", "webhook"]

scalars = st.none() | st.booleans() | st.integers(-3, 5) | st.floats(allow_nan=True) | st.text(max_size=6) | \
    st.sampled_from(IDS)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from(IDS) | st.text(max_size=4), inner, max_size=3),
                           max_leaves=8)
#: Values a blueprint may hold: JSON has no NaN or Infinity (refused when a blueprint is read).
finite_json_values = json_values.filter(lambda value: non_finite_path(value) is None)


def field_or_junk(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a well-typed value, sometimes any JSON value."""
    return st.one_of(good, good, good, json_values)


configs = st.fixed_dictionaries({}, optional={
    "maxRetries": field_or_junk(st.integers(-1, 4)),
    "retryDelay": field_or_junk(st.integers(-5, 20) | st.floats(-1, 5)),
    "timeout": field_or_junk(st.integers(-5, 100)),
    "fallback": field_or_junk(st.sampled_from(IDS)),
    "joinStrategy": field_or_junk(st.sampled_from(["all", "any", "some", ""])),
    "queue": field_or_junk(st.text(max_size=4)),
    "extra": json_values,
})
params = st.fixed_dictionaries({}, optional={
    "condition": field_or_junk(st.sampled_from(["x < 3", "(", "a.b", "true", "count <"])),
    "duration": field_or_junk(st.sampled_from([10, -1, "1s", "soon", "5 weeks", 0])),
    "blueprintId": field_or_junk(st.sampled_from(["child", "gone", ""])),
    "workerUsesKey": field_or_junk(st.sampled_from(["echo", "missing"])),
    "gatherNodeId": field_or_junk(st.sampled_from(IDS)),
    "inputs": json_values,
    "outputs": json_values,
})
nodes = st.fixed_dictionaries(
    {"id": field_or_junk(st.sampled_from(IDS)), "uses": field_or_junk(st.sampled_from(USES))},
    optional={"params": field_or_junk(params), "config": field_or_junk(configs),
              "inputs": field_or_junk(st.sampled_from(IDS) | st.dictionaries(st.text(max_size=3),
                                                                            st.sampled_from(IDS), max_size=2)),
              "_sourceLocation": json_values},
)
expressions = st.sampled_from(["a", "result.output > 1", "(", "a ===", "input.x", "__proto__", "x ? 1 : 2",
                               "'unterminated", "a[0]", "f()", "a = 1", "!!a"]) | st.text(max_size=12)
edges = st.fixed_dictionaries(
    {"source": field_or_junk(st.sampled_from(IDS)), "target": field_or_junk(st.sampled_from(IDS))},
    optional={"action": field_or_junk(st.sampled_from(["go", "continue", "break"])),
              "condition": field_or_junk(expressions), "transform": field_or_junk(expressions),
              "label": json_values},
)
hashable_json = st.none() | st.booleans() | st.integers(-3, 5) | st.text(max_size=6) | st.sampled_from(IDS)
unhashable_json = st.lists(finite_json_values, max_size=2) | st.dictionaries(st.text(max_size=3), finite_json_values,
                                                                             max_size=2)
metadata = st.fixed_dictionaries({}, optional={
    "cycleEntryPoints": st.lists(st.sampled_from(IDS) | hashable_json, max_size=3) | hashable_json
    | st.dictionaries(st.text(max_size=3), json_values, max_size=2),
    "version": json_values,
})
documents = st.one_of(
    json_values,
    st.fixed_dictionaries({"id": field_or_junk(st.sampled_from(["bp", "x"])),
                           "nodes": field_or_junk(st.lists(field_or_junk(nodes), max_size=5)),
                           "edges": field_or_junk(st.lists(field_or_junk(edges), max_size=6))},
                          optional={"metadata": field_or_junk(metadata), "other": json_values}),
)


def small_registry() -> Registry:
    registry = Registry()
    registry.register("echo", lambda ctx: ctx.input)
    return registry


@SETTINGS
@given(documents)
def test_loading_and_validating_never_crash(document: Any) -> None:
    try:
        blueprint = Blueprint.from_dict(document)
    except BlueprintFormatError as exc:
        assert exc.path.startswith("$")
        return
    for registry, siblings in ((None, None), (small_registry(), {"child": blueprint})):
        issues = validate(blueprint, registry, siblings)
        assert all(isinstance(i, ValidationIssue) and i.severity in ("error", "warning") for i in issues)
    assert Blueprint.from_dict(blueprint.to_dict()).to_dict() == blueprint.to_dict()


@SETTINGS
@given(st.lists(unhashable_json, min_size=1, max_size=3))
@example([{"k": 1}])
def test_unhashable_cycle_entry_points_give_an_issue(entries: list[Any]) -> None:
    blueprint = Blueprint.from_dict({"id": "x", "nodes": [{"id": "a", "uses": "echo"}], "edges": [],
                                     "metadata": {"cycleEntryPoints": entries}})
    assert "INVALID_CONFIG" in [i.code for i in validate(blueprint)]


@SETTINGS
@given(expressions, st.sampled_from(["condition", "transform"]))
def test_random_edge_expressions_give_issues_not_crashes(text: str, field_name: str) -> None:
    blueprint = Blueprint.from_dict({"id": "x", "nodes": [{"id": "a", "uses": "echo"}, {"id": "b", "uses": "echo"}],
                                     "edges": [{"source": "a", "target": "b", field_name: text}]})
    issues = validate(blueprint, small_registry())
    try:
        validate_expression(text)
    except ExpressionError:
        assert [i.code for i in issues] == ["INVALID_EXPRESSION"]
        assert field_name in issues[0].message and issues[0].edge == "a -> b"
    else:
        assert issues == []


@SETTINGS
@given(expressions)
def test_random_loop_conditions_give_issues_not_crashes(text: str) -> None:
    blueprint = Blueprint.from_dict({"id": "x", "nodes": [
        {"id": "ctl", "uses": "loop-controller", "params": {"condition": text}}, {"id": "body", "uses": "echo"},
    ], "edges": [{"source": "ctl", "target": "body", "action": "continue"}, {"source": "body", "target": "ctl"}]})
    codes = [i.code for i in validate(blueprint, small_registry())]
    try:
        validate_expression(text)
    except ExpressionError:
        assert codes == ["INVALID_EXPRESSION"]
    else:
        assert codes == []


@st.composite
def dags(draw: st.DrawFn) -> tuple[Blueprint, dict[str, str | None]]:
    """A random DAG of `step` nodes (edges only go forward), some edges gated by actions."""
    size = draw(st.integers(1, 8))
    ids = [f"n{i}" for i in range(size)]
    actions = {n: draw(st.sampled_from([None, "go", "stop"])) for n in ids}
    node_defs = [{"id": n, "uses": "step", "params": {"action": actions[n]},
                  **({"config": {"joinStrategy": "any"}} if draw(st.booleans()) else {})} for n in ids]
    edge_defs = []
    for j in range(1, size):
        for i in range(j):
            if draw(st.integers(0, 2)) == 0:
                edge: dict[str, Any] = {"source": ids[i], "target": ids[j]}
                gate = draw(st.sampled_from([None, None, "go", "stop"]))
                if gate:
                    edge["action"] = gate
                edge_defs.append(edge)
    return Blueprint.from_dict({"id": "dag", "nodes": node_defs, "edges": edge_defs}), actions


def expected_to_run(blueprint: Blueprint, actions: dict[str, str | None]) -> set[str]:
    """Start nodes run; a node runs when a node that ran took an edge into it (§3.2, §3.5)."""
    ran = {n.id for n in blueprint.nodes if not any(e.target == n.id for e in blueprint.edges)}
    for node in blueprint.nodes:
        if node.id not in ran:
            continue
        out = [e for e in blueprint.edges if e.source == node.id]
        taken = [e for e in out if actions[node.id] is not None and e.action == actions[node.id]]
        taken = taken or [e for e in out if e.action is None]
        ran |= {e.target for e in taken}
    return ran


def recording_registry(runs: list[str]) -> Registry:
    """A registry whose `step` node appends its id to `runs` and takes the action its params name."""
    registry = Registry()

    @registry.node("step")
    def step(ctx: NodeContext) -> NodeResult:
        runs.append(ctx.node_id)
        return NodeResult(output=ctx.node_id, action=ctx.params.get("action"))

    return registry


@SETTINGS
@given(dags())
def test_random_dags_run_to_completion_with_dead_paths_eliminated(case: tuple[Blueprint, dict[str, str | None]]
                                                                  ) -> None:
    blueprint, actions = case
    runs: list[str] = []
    registry = recording_registry(runs)

    result = LocalRunner(registry).run(blueprint)
    assert result.status == "completed", result.errors
    assert sorted(runs) == sorted(expected_to_run(blueprint, actions))
    assert len(runs) == len(set(runs))


def _prefixed(blueprint: Blueprint, prefix: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A DAG's nodes and edges under prefixed ids."""
    nodes = [{**n.to_dict(), "id": prefix + n.id} for n in blueprint.nodes]
    edges = [{**e.to_dict(), "source": prefix + e.source, "target": prefix + e.target} for e in blueprint.edges]
    return nodes, edges


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags())
def test_random_dags_inside_nested_loops_run_once_per_pass_and_their_joins_settle(
        case: tuple[Blueprint, dict[str, str | None]]) -> None:
    """The DAG runs in an inner loop's body (off the cycle) and in the outer loop's body, where
    its sinks join the inner loop's exit: 2 outer passes, the inner loop 1 then 2 passes."""
    blueprint, actions = case
    inner_nodes, inner_edges = _prefixed(blueprint, "i_")
    outer_nodes, outer_edges = _prefixed(blueprint, "o_")
    starts = [n.id for n in blueprint.nodes if not any(e.target == n.id for e in blueprint.edges)]
    sinks = [n.id for n in blueprint.nodes if not any(e.source == n.id for e in blueprint.edges)]
    loop = Blueprint.from_dict({"id": "nested", "nodes": [
        {"id": "octl", "uses": "loop-controller", "params": {"condition": "o < 2"}, "config": {"joinStrategy": "any"}},
        {"id": "obody", "uses": "count", "params": {"key": "o", "reset": "i"}},
        {"id": "ictl", "uses": "loop-controller", "params": {"condition": "i < o"}, "config": {"joinStrategy": "any"}},
        {"id": "ibody", "uses": "count", "params": {"key": "i"}},
        {"id": "j", "uses": "count", "params": {"key": "joins"}},
        {"id": "init", "uses": "count", "params": {"key": "init"}},
        *inner_nodes, *outer_nodes,
    ], "edges": [
        {"source": "init", "target": "octl"}, {"source": "octl", "target": "obody", "action": "continue"},
        {"source": "obody", "target": "ictl"}, {"source": "ictl", "target": "ibody", "action": "continue"},
        {"source": "ibody", "target": "ictl"}, {"source": "ictl", "target": "j", "action": "break"},
        {"source": "j", "target": "octl"},
        *({"source": "ibody", "target": "i_" + s} for s in starts), *inner_edges,
        *({"source": "obody", "target": "o_" + s} for s in starts), *outer_edges,
        *({"source": "o_" + s, "target": "j"} for s in sinks),
    ]})
    runs: list[str] = []
    registry = recording_registry(runs)

    @registry.node("count")
    def count(ctx: NodeContext) -> int:
        value = (ctx.context.get(ctx.params["key"]) or 0) + 1
        ctx.context.set(ctx.params["key"], value)
        if ctx.params.get("reset"):
            ctx.context.set(ctx.params["reset"], 0)
        return value

    result = LocalRunner(registry).run(loop, {"o": 0})
    assert result.status == "completed", result.errors
    expected = expected_to_run(blueprint, actions)
    assert sorted(runs) == sorted([f"i_{n}" for n in expected] * 3 + [f"o_{n}" for n in expected] * 2)
    assert result.context["joins"] == 2 and result.context["i"] == 2


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags(), st.sampled_from(["any", "all"]), st.sampled_from(["any", "all"]))
def test_random_dags_on_the_inner_cycle_settle_every_pass_of_both_loops(
        case: tuple[Blueprint, dict[str, str | None]], inner_join: str, outer_join: str) -> None:
    """The DAG is the inner loop's body on its cycle: every sink goes back to the inner
    controller, whose `break` is the outer loop's back edge (SPEC §3.8). Sinks on branches a pass
    does not take are skipped with their back edges; when none of them runs, the pass leaves
    the inner loop and, with it, the outer one. Never `stalled`, the replay agrees."""
    blueprint, actions = case
    dag_nodes, dag_edges = _prefixed(blueprint, "d_")
    starts = [n.id for n in blueprint.nodes if not any(e.target == n.id for e in blueprint.edges)]
    sinks = [n.id for n in blueprint.nodes if not any(e.source == n.id for e in blueprint.edges)]
    loop = Blueprint.from_dict({"id": "oncycle", "nodes": [
        {"id": "init", "uses": "count", "params": {"key": "init"}},
        {"id": "octl", "uses": "loop-controller", "params": {"condition": "o < 2"},
         "config": {"joinStrategy": outer_join}},
        {"id": "obody", "uses": "count", "params": {"key": "o", "reset": "i"}},
        {"id": "ictl", "uses": "loop-controller", "params": {"condition": "i < o"},
         "config": {"joinStrategy": inner_join}},
        {"id": "ibody", "uses": "count", "params": {"key": "i"}},
        {"id": "done", "uses": "count", "params": {"key": "done"}},
        *dag_nodes,
    ], "edges": [
        {"source": "init", "target": "octl"}, {"source": "octl", "target": "obody", "action": "continue"},
        {"source": "obody", "target": "ictl"}, {"source": "ictl", "target": "ibody", "action": "continue"},
        {"source": "ictl", "target": "octl", "action": "break"},
        {"source": "octl", "target": "done", "action": "break"},
        *({"source": "ibody", "target": "d_" + s} for s in starts), *dag_edges,
        *({"source": "d_" + s, "target": "ictl"} for s in sinks),
    ]})
    runs: list[str] = []
    registry = recording_registry(runs)

    @registry.node("count")
    def count(ctx: NodeContext) -> int:
        value = (ctx.context.get(ctx.params["key"]) or 0) + 1
        ctx.context.set(ctx.params["key"], value)
        if ctx.params.get("reset"):
            ctx.context.set(ctx.params["reset"], 0)
        return value

    store = MemoryContextStore()
    result = LocalRunner(registry, context_store=store).run(loop, {"o": 0})
    assert result.status == "completed", result.errors
    expected = expected_to_run(blueprint, actions)
    goes_on = any(s in expected for s in sinks)
    passes = 3 if goes_on else 1  # inner passes: 1 then 2, or the first pass leaves both loops
    assert sorted(runs) == sorted([f"d_{n}" for n in expected] * passes)
    assert result.context.get("done") == (1 if goes_on else None)
    outputs = {(o.node_id, o.iteration): o for o in store.outputs(result.run_id)}
    replay = frontier(Graph(loop), result.run_id, outputs, None, lambda key: result.context.get(key, MISSING))
    assert replay.complete
