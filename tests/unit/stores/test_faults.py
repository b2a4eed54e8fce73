"""What a failure is: infrastructure (retried, not an attempt), permanent (fails at once) or the node's own."""

from __future__ import annotations

from typing import Any

import pytest
import redis.exceptions
from azure.core.exceptions import HttpResponseError, ServiceResponseError

from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.registry import Registry
from flowcraft_celery.local.runner import LocalRunner
from flowcraft_celery.model.builder import Flow
from flowcraft_celery.stores.base import ValueTooLargeError
from flowcraft_celery.stores.faults import InfrastructureError, PermanentError, ValueNotJsonError, classify
from flowcraft_celery.stores.guard import guarded
from flowcraft_celery.stores.limits import MAX_ITEM_BYTES
from flowcraft_celery.stores.memory import MemoryContextStore


def test_classify_follows_the_cause_chain() -> None:
    infra = InfrastructureError("Cosmos DB unavailable")
    try:
        try:
            raise infra
        except InfrastructureError as exc:
            raise KeyError("node code wrapped it") from exc
    except KeyError as wrapped:
        assert classify(wrapped) == "infrastructure"
    assert classify(ValueTooLargeError("k", 10, 5)) == "permanent"
    assert classify(ValueNotJsonError("k", "not serializable")) == "permanent"
    assert classify(RuntimeError("the node's own bug")) == "node"


def test_infrastructure_error_carries_only_text_so_it_pickles() -> None:
    import pickle

    error = InfrastructureError.wrap("Redis at redis://h:1/0", ConnectionError("refused\nmore"))
    assert str(pickle.loads(pickle.dumps(error))) == "Redis at redis://h:1/0 unavailable: ConnectionError: refused"


class _Flaky:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def get(self, *_: Any) -> Any:
        raise self.exc

    def pages(self) -> Any:
        yield 1
        raise self.exc


@pytest.mark.parametrize("exc", [ServiceResponseError("Read timed out"), redis.exceptions.TimeoutError("timeout"),
                                 ConnectionRefusedError(111, "refused")])
def test_guarded_store_turns_service_failures_into_infrastructure_errors_naming_it(exc: Exception) -> None:
    store = guarded(_Flaky(exc), "Cosmos DB at https://127.0.0.1:1/")
    with pytest.raises(InfrastructureError, match=r"Cosmos DB at https://127\.0\.0\.1:1/ unavailable"):
        store.get("run", "key")
    with pytest.raises(InfrastructureError):
        list(store.pages())


def test_guarded_store_passes_permanent_and_unknown_errors_through() -> None:
    too_big = HttpResponseError(message="Request size is too large")
    too_big.status_code = 413
    with pytest.raises(PermanentError, match="Cosmos refused the value"):
        guarded(_Flaky(too_big), "Cosmos").get()
    with pytest.raises(KeyError):
        guarded(_Flaky(KeyError("bug")), "Cosmos").get()


def test_memory_store_refuses_what_cosmos_could_not_hold_naming_the_key() -> None:
    store = MemoryContextStore()
    store.create_run("r", {})
    with pytest.raises(ValueTooLargeError, match="'big'"):
        store.set("r", "big", "x" * MAX_ITEM_BYTES)
    with pytest.raises(ValueNotJsonError, match="'odd'"):
        store.set("r", "odd", {1, 2})
    with pytest.raises(ValueNotJsonError, match=r"'_outputs\.n'"):
        store.record_output("r", "n", 0, float("nan"))


def _runner(registry: Registry) -> LocalRunner:
    return LocalRunner(registry)


def test_an_output_over_the_store_limit_fails_the_node_at_once_on_the_local_runner() -> None:
    registry = Registry()
    calls: list[int] = []

    @registry.node("huge")
    def huge(ctx: NodeContext) -> str:
        calls.append(ctx.attempt)
        return "x" * (3 * 1024 * 1024)

    flow = Flow("huge-out").node("big", "huge", max_retries=3).node("after", "huge").edge("big", "after").build()
    result = _runner(registry).run(flow)
    assert result.status == "failed"
    assert calls == [1]
    assert "over the store's limit" in result.errors[0]["message"] and result.errors[0]["nodeId"] == "big"


def test_a_context_value_that_is_not_json_fails_the_node_without_retries() -> None:
    registry = Registry()
    calls: list[int] = []

    @registry.node("odd")
    def odd(ctx: NodeContext) -> None:
        calls.append(ctx.attempt)
        ctx.context.set("odd", object())

    result = _runner(registry).run(Flow("odd").node("n", "odd", max_retries=3).build())
    assert result.status == "failed"
    assert calls == [1]
    assert "'odd' is not JSON" in result.errors[0]["message"]


def test_an_infrastructure_error_inside_a_node_is_not_an_attempt() -> None:
    registry = Registry()

    @registry.node("outage")
    def outage(ctx: NodeContext) -> None:
        raise InfrastructureError("Cosmos DB unavailable: timeout")

    with pytest.raises(InfrastructureError):
        _runner(registry).run(Flow("outage").node("n", "outage", max_retries=3).build())
