"""The conformance behaviour vocabulary (SPEC §10): each kind, and bad specs named by field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest

from flowcraft_celery.devtools.behaviours import BehaviourError, MemoryRecorder, build, counted, registry_for
from flowcraft_celery.engine.context import NodeContext, RunContext
from flowcraft_celery.engine.registry import NodeResult
from flowcraft_celery.stores.memory import MemoryContextStore


def make_ctx(node_input: Any = None, context: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
             attempt: int = 1, node_id: str = "n") -> NodeContext:
    store = MemoryContextStore()
    store.create_run("r", dict(context or {}))
    return NodeContext(input=node_input, params=dict(params or {}), context=RunContext(store, "r"), run_id="r",
                       node_id=node_id, blueprint_id="b", attempt=attempt)


def run(spec: dict[str, Any], ctx: NodeContext) -> NodeResult:
    return build(spec)(ctx)


def test_echo() -> None:
    assert run({"kind": "echo"}, make_ctx({"a": 1})) == NodeResult(output={"a": 1})


def test_const_with_and_without_action() -> None:
    assert run({"kind": "const", "output": [1], "action": "go"}, make_ctx("x")) == NodeResult(output=[1], action="go")
    assert run({"kind": "const"}, make_ctx("x")) == NodeResult(output=None)


def test_set_writes_the_context() -> None:
    ctx = make_ctx()
    assert run({"kind": "set", "key": "k", "value": {"v": 2}}, ctx).output == {"v": 2}
    assert ctx.context.get("k") == {"v": 2}


def test_add() -> None:
    assert run({"kind": "add", "amount": 2.5}, make_ctx(4)).output == 6.5


@pytest.mark.parametrize("bad", ["4", None, True, [4]])
def test_add_needs_a_number_input(bad: Any) -> None:
    with pytest.raises(TypeError, match="number"):
        run({"kind": "add", "amount": 1}, make_ctx(bad))


@pytest.mark.parametrize(("node_input", "total"), [
    ([1, 2, 3.5], 6.5), ({"a": 1, "b": 2}, 3), ([1, "2", None, True, 4], 5), ([], 0), ("12", 0), (None, 0),
])
def test_sum(node_input: Any, total: float) -> None:
    assert run({"kind": "sum"}, make_ctx(node_input)).output == total


def test_incr_starts_at_zero_and_counts() -> None:
    ctx = make_ctx(context={"other": 1})
    body = build({"kind": "incr", "key": "hits"})
    assert [body(ctx).output for _ in range(3)] == [1, 2, 3]
    assert ctx.context.get("hits") == 3


@pytest.mark.parametrize(("path", "action"), [
    ("input.kind", "fast"), ("params.mode", "strict"), ("context.route.to", "left"), ("input.list.1", "b"),
    ("input.missing", None), ("context.none", None), ("input.kind.deeper", None), ("input.n", "3"),
])
def test_route_sets_the_action_from_a_path(path: str, action: str | None) -> None:
    ctx = make_ctx({"kind": "fast", "list": ["a", "b"], "n": 3}, {"route": {"to": "left"}}, {"mode": "strict"})
    result = run({"kind": "route", "path": path}, ctx)
    assert result.action == action
    assert result.output == ctx.input


def test_fail_times_then_behaviour() -> None:
    body = build({"kind": "fail", "times": 2, "then": {"kind": "const", "output": "ok"}})
    for attempt in (1, 2):
        with pytest.raises(RuntimeError, match=r"^boom worker$"):
            body(make_ctx(attempt=attempt, node_id="worker"))
    assert body(make_ctx(attempt=3, node_id="worker")).output == "ok"


def test_fail_then_defaults_to_echo() -> None:
    assert build({"kind": "fail", "times": 1})(make_ctx("in", attempt=2)).output == "in"


def test_fail_forever() -> None:
    body = build({"kind": "fail", "times": -1})
    for attempt in (1, 5, 100):
        with pytest.raises(RuntimeError, match="boom n"):
            body(make_ctx(attempt=attempt))


def test_fail_zero_times_never_fails() -> None:
    assert build({"kind": "fail", "times": 0})(make_ctx("x")).output == "x"


def test_sleep_ms_then_behaviour() -> None:
    assert run({"kind": "sleep_ms", "ms": 1, "then": {"kind": "const", "output": 9}}, make_ctx()).output == 9
    assert run({"kind": "sleep_ms", "ms": 0}, make_ctx("e")).output == "e"


def test_spawn_returns_dynamic_nodes() -> None:
    result = run({"kind": "spawn", "uses": "work", "count": 3}, make_ctx({"keep": True}, node_id="sp"))
    assert result.output == {"keep": True}
    assert result.dynamic_nodes == [{"id": f"sp_{i}", "uses": "work", "input": i} for i in range(3)]


def test_record() -> None:
    assert run({"kind": "record"}, make_ctx([1], node_id="r1")).output == {"node": "r1", "input": [1]}


def test_write_own() -> None:
    ctx = make_ctx("payload", node_id="w7")
    assert run({"kind": "write_own"}, ctx).output == "payload"
    assert ctx.context.get("seen.w7") == "payload"


def test_counted_and_registry_for_count_invocations_per_node() -> None:
    recorder = MemoryRecorder()
    registry = registry_for({"e": {"kind": "echo"}, "f": {"kind": "fail", "times": -1}}, recorder, prefix="p.")
    assert "p.e" in registry and "e" not in registry
    echo = cast(Callable[[NodeContext], Any], registry.get("p.e"))
    echo(make_ctx(node_id="a"))
    echo(make_ctx(node_id="a"))
    echo(make_ctx(node_id="b"))
    with pytest.raises(RuntimeError):
        counted(build({"kind": "fail", "times": -1}), recorder)(make_ctx(node_id="c"))
    assert recorder.counts() == {"a": 2, "b": 1, "c": 1}


@pytest.mark.parametrize(("spec", "where"), [
    ("echo", "behaviour must be an object"),
    ({}, "behaviour.kind None"),
    ({"kind": "explode"}, "behaviour.kind 'explode'"),
    ({"kind": "set"}, "behaviour.key"),
    ({"kind": "set", "key": 3}, "behaviour.key"),
    ({"kind": "incr"}, "behaviour.key"),
    ({"kind": "add"}, "behaviour.amount"),
    ({"kind": "add", "amount": "1"}, "behaviour.amount"),
    ({"kind": "add", "amount": True}, "behaviour.amount"),
    ({"kind": "route"}, "behaviour.path"),
    ({"kind": "fail"}, "behaviour.times"),
    ({"kind": "fail", "times": 1.5}, "behaviour.times"),
    ({"kind": "fail", "times": False}, "behaviour.times"),
    ({"kind": "sleep_ms", "ms": "10"}, "behaviour.ms"),
    ({"kind": "spawn", "count": 2}, "behaviour.uses"),
    ({"kind": "spawn", "uses": "x"}, "behaviour.count"),
    ({"kind": "fail", "times": 1, "then": {"kind": "nope"}}, "behaviour.then.kind"),
    ({"kind": "sleep_ms", "ms": 1, "then": {"kind": "add"}}, "behaviour.then.amount"),
    ({"kind": "fail", "times": 1, "then": "echo"}, "behaviour.then must be an object"),
])
def test_bad_spec_names_the_field(spec: Any, where: str) -> None:
    with pytest.raises(BehaviourError) as info:
        build(spec)
    assert where in str(info.value)


def test_registry_for_names_the_implementation() -> None:
    with pytest.raises(BehaviourError, match=r"implementations\.slow\.ms"):
        registry_for({"fine": {"kind": "echo"}, "slow": {"kind": "sleep_ms"}}, MemoryRecorder())
