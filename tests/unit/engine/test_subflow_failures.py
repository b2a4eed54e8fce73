"""A subflow node's child run that does not complete is a failed attempt of the node (SPEC §3.9):
retries start new child runs, then the fallback node runs, else the run fails."""

from __future__ import annotations

from typing import Any

from flowcraft_celery.distributed.runs.publishing import child_run_id
from flowcraft_celery.engine import semantics
from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.registry import Registry
from flowcraft_celery.local.runner import LocalRunner
from flowcraft_celery.model.builder import Flow
from flowcraft_celery.model.graph import Graph
from flowcraft_celery.model.ids import MAX_ID_LENGTH, check_id


def test_the_step_after_a_failed_attempt() -> None:
    flow = (Flow("f").node("a", "x", max_retries=3, retry_delay=250, fallback="b").node("b", "x")
            .node("c", "x").node("d", "x", max_retries=2))
    graph = Graph(flow.build())
    assert semantics.after_failure(graph, "a", 1) == semantics.AfterFailure(retry=True, attempt=2, delay=0.25)
    assert semantics.after_failure(graph, "a", 2).attempt == 3
    assert semantics.after_failure(graph, "a", 3) == semantics.AfterFailure(retry=False, attempt=3, fallback="b")
    assert semantics.after_failure(graph, "a", 1, retriable=False).fallback == "b"
    assert semantics.after_failure(graph, "c", 1) == semantics.AfterFailure(retry=False, attempt=1)
    assert semantics.after_failure(graph, "d", 2) == semantics.AfterFailure(retry=False, attempt=2)


def test_each_attempt_has_a_child_run_id_of_its_own() -> None:
    assert child_run_id("r", "sub", 3) == "r.sub.3" == child_run_id("r", "sub", 3, 1)  # runs in flight keep theirs
    ids = {child_run_id("r", "sub", 3, attempt) for attempt in (1, 2, 3)}
    assert len(ids) == 3 and child_run_id("r", "sub", 3, 2) == child_run_id("r", "sub", 3, 2)
    long_run = "r" * 250
    hashed = {child_run_id(long_run, "sub", 0, attempt) for attempt in (1, 2)}
    assert len(hashed) == 2 and all(len(i) <= MAX_ID_LENGTH and check_id("run", i) for i in hashed)


class Kid:
    """Child node `plus`: the input + 100, failing for the first `failures` calls over all child runs."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[str] = []
        self.events: list[tuple[str, str | None, Any]] = []
        self.registry = Registry()

        @self.registry.node("plus")
        def plus(ctx: NodeContext) -> Any:
            self.calls.append(ctx.run_id)
            if len(self.calls) <= self.failures:
                raise RuntimeError(f"boom {len(self.calls)}")
            return (ctx.input or 0) + 100

        @self.registry.node("echo")
        def echo(ctx: NodeContext) -> Any:
            return ctx.input

    def runner(self) -> LocalRunner:
        child = Flow("kid").node("plus", "plus").build()
        return LocalRunner(self.registry, {"kid": child},
                           on_event=lambda e, d: self.events.append((e, d.get("nodeId"), d.get("attempt"))))


def sub_flow(max_retries: int | None = None, fallback: str | None = None) -> Flow:
    return (Flow("parent").node("s", "subflow", params={"blueprintId": "kid"}, max_retries=max_retries,
                                fallback=fallback, retry_delay=1)
            .node("after", "echo").node("spare", "echo").edge("s", "after"))


def test_a_retry_starts_a_new_child_run_and_the_node_succeeds() -> None:
    kid = Kid(failures=1)
    result = kid.runner().run(sub_flow(max_retries=2, fallback="spare").build())
    assert result.status == "completed", result.errors
    assert len(kid.calls) == 2 and kid.calls[0] != kid.calls[1]  # one child run per attempt
    assert result.context["_outputs.s"] == 100 and result.context["_outputs.after"] == 100
    assert "_outputs.spare" not in result.context
    mine = [(e, a) for e, n, a in kid.events if n == "s"]
    assert mine == [("node:start", 1), ("node:error", 1), ("node:retry", 2), ("node:start", 2), ("node:finish", None)]


def test_after_the_last_failed_child_run_the_fallback_drives_the_edges() -> None:
    kid = Kid(failures=2)
    result = kid.runner().run(sub_flow(max_retries=2, fallback="spare").build())
    assert result.status == "completed", result.errors
    assert len(set(kid.calls)) == 2
    assert result.context["_outputs.s"] is None and result.context["_outputs.spare"] is None
    assert "_outputs.after" in result.context
    assert ("node:fallback", "s", None) in kid.events


def test_without_a_fallback_the_run_fails_with_the_childs_error() -> None:
    kid = Kid(failures=5)
    result = kid.runner().run(sub_flow(max_retries=3).build())
    assert result.status == "failed"
    assert len(set(kid.calls)) == 3
    [error] = result.errors
    assert error["nodeId"] == "s" and error["type"] == "SubflowError" and error["attempt"] == 3
    assert error["message"] == f"subflow {kid.calls[-1]} failed: boom 3"
