"""The conformance behaviour vocabulary (SPEC §10): JSON specs turned into node functions.

Every behaviour counts its invocations through a `Recorder`, so a scenario can check how
many times each node's implementation ran, whichever process ran it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.registry import NodeResult, Registry
from flowcraft_celery.errors import FlowcraftError

NodeFunction = Callable[[NodeContext], Any]


class Recorder(Protocol):
    """Counts implementation invocations per node id."""

    def hit(self, node_id: str) -> None:
        """Count one invocation of `node_id`'s implementation."""

    def counts(self) -> dict[str, int]:
        """Invocations so far, by node id."""


class MemoryRecorder:
    """A Recorder for one process."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def hit(self, node_id: str) -> None:
        self._counts[node_id] += 1

    def counts(self) -> dict[str, int]:
        return dict(self._counts)


class BehaviourError(FlowcraftError, ValueError):
    """A behaviour spec is malformed: names the field at fault."""


def _field(spec: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    value = spec.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int, float))):
        raise BehaviourError(f"{where}.{key} must be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _path(root: Mapping[str, Any], path: str, ctx: NodeContext) -> Any:
    """Value at a dotted path of `{input, params, context}`; context reads go through the store."""
    head, _, rest = path.partition(".")
    parts = rest.split(".") if rest else []
    if head == "context":
        if not parts:
            return ctx.context.to_json()
        value = ctx.context.get(parts[0])
        parts = parts[1:]
    else:
        value = root.get(head)
    for part in parts:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _numbers(value: Any) -> list[float]:
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]


def build(spec: Mapping[str, Any], where: str = "behaviour") -> Callable[[NodeContext], NodeResult]:
    """A node body for one behaviour spec (without invocation counting)."""
    if not isinstance(spec, Mapping):
        raise BehaviourError(f"{where} must be an object, got {spec!r}")
    kind = spec.get("kind")
    then = build(spec.get("then") or {"kind": "echo"}, f"{where}.then") if kind in ("fail", "sleep_ms") else None

    def body(ctx: NodeContext) -> NodeResult:
        if kind == "echo":
            return NodeResult(output=ctx.input)
        if kind == "const":
            return NodeResult(output=spec.get("output"), action=spec.get("action"))
        if kind == "set":
            ctx.context.set(spec["key"], spec.get("value"))
            return NodeResult(output=spec.get("value"))
        if kind == "add":
            if not isinstance(ctx.input, (int, float)) or isinstance(ctx.input, bool):
                raise TypeError(f"add: input must be a number, got {ctx.input!r}")
            return NodeResult(output=ctx.input + spec["amount"])
        if kind == "sum":
            return NodeResult(output=sum(_numbers(ctx.input)))
        if kind == "incr":
            value = (ctx.context.get(spec["key"]) or 0) + 1
            ctx.context.set(spec["key"], value)
            return NodeResult(output=value)
        if kind == "route":
            root = {"input": ctx.input, "params": ctx.params}
            action = _path(root, spec["path"], ctx)
            return NodeResult(output=ctx.input, action=None if action is None else str(action))
        if kind == "fail":
            times = spec["times"]
            if times == -1 or ctx.attempt <= times:
                raise RuntimeError(f"boom {ctx.node_id}")
            assert then is not None
            return then(ctx)
        if kind == "sleep_ms":
            time.sleep(spec["ms"] / 1000.0)
            assert then is not None
            return then(ctx)
        if kind == "spawn":
            nodes = [{"id": f"{ctx.node_id}_{i}", "uses": spec["uses"], "input": i} for i in range(spec["count"])]
            return NodeResult(output=ctx.input, dynamic_nodes=nodes)
        if kind == "record":
            return NodeResult(output={"node": ctx.node_id, "input": ctx.input})
        if kind == "write_own":
            ctx.context.set(f"seen.{ctx.node_id}", ctx.input)
            return NodeResult(output=ctx.input)
        raise BehaviourError(f"{where}.kind {kind!r} is not a known behaviour")

    _check(spec, where)
    return body


_REQUIRED: dict[str, list[tuple[str, type | tuple[type, ...]]]] = {
    "echo": [], "const": [], "sum": [], "record": [], "write_own": [],
    "set": [("key", str)], "incr": [("key", str)], "add": [("amount", (int, float))],
    "route": [("path", str)], "fail": [("times", int)], "sleep_ms": [("ms", (int, float))],
    "spawn": [("uses", str), ("count", int)],
}


def _check(spec: Mapping[str, Any], where: str) -> None:
    """Reject an unknown kind or a missing/mistyped field before any run starts."""
    kind = spec.get("kind")
    if kind not in _REQUIRED:
        raise BehaviourError(f"{where}.kind {kind!r} is not one of {sorted(_REQUIRED)}")
    for key, expected in _REQUIRED[kind]:
        _field(spec, key, where, expected)


def counted(body: NodeFunction, recorder: Recorder) -> NodeFunction:
    """Wrap a node body so each invocation is counted under its node id."""

    def node(ctx: NodeContext) -> Any:
        recorder.hit(ctx.node_id)
        return body(ctx)

    return node


def registry_for(implementations: Mapping[str, Any], recorder: Recorder, prefix: str = "") -> Registry:
    """A registry with one counted behaviour per `uses` key (optionally namespaced by `prefix`)."""
    registry = Registry()
    for uses, spec in implementations.items():
        registry.register(prefix + uses, counted(build(spec, f"implementations.{uses}"), recorder))
    return registry
