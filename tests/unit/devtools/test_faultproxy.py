"""The fault proxy's plan language, and Azure's answers as the SDK understands them."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.storage.queue import QueueClient

from flowcraft_celery.devtools.faultproxy import FaultPlan, FaultProxy, PlanError, Route, Rule, proxied_env

KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def test_rules_read_service_kinds_answer_and_rate() -> None:
    rule = Rule.parse("queue/send,receive=503@0.1")
    assert (rule.service, rule.answer, rule.rate, rule.kinds) == ("queue", "503", 0.1, frozenset({"send", "receive"}))
    assert rule.applies("queue", "send") and not rule.applies("queue", "delete")
    assert Rule.parse("cosmos=429@0.5").applies("cosmos", "docs:patch")
    assert not Rule.parse("*=429@1").applies("queue", "send")  # a 429 is not a Storage answer


@pytest.mark.parametrize(("text", "complaint"), [
    ("queue=503", "answer@rate"), ("redis=503@0.1", "service"), ("cosmos=500@0.1", "answer"),
    ("queue=503@x", "not a number"), ("queue=503@2", "between 0 and 1"),
])
def test_a_bad_rule_is_named(text: str, complaint: str) -> None:
    with pytest.raises(PlanError, match=complaint):
        Rule.parse(text)


def test_a_plan_round_trips_through_json_and_injects_at_its_rate() -> None:
    plan = FaultPlan(rules=(Rule.parse("queue=503@0.1"),), latency_ms=5, tail=0.01, tail_seconds=2,
                     queue_rates={"q": 50})
    assert FaultPlan.from_json(plan.to_json()) == plan
    rng = random.Random(7)
    picks = [plan.pick("queue", "send", rng) for _ in range(10_000)]
    assert 800 < picks.count("503") < 1200 and plan.pick("cosmos", "docs:read", rng) is None
    delays = sorted(plan.delay(rng) for _ in range(10_000))
    assert 0.003 < delays[5000] < 0.008 and 50 < delays.count(2.0) < 150


def test_proxied_env_points_queue_blob_and_cosmos_at_the_proxy() -> None:
    env = {"AZURE_STORAGE_CONNECTION_STRING": "AccountName=a;QueueEndpoint=http://127.0.0.1:10001/a;"
                                              "BlobEndpoint=http://127.0.0.1:10000/a;",
           "AZURE_COSMOS_CONNECTION_STRING": "AccountEndpoint=https://127.0.0.1:8081/;AccountKey=k;"}
    out = proxied_env(env, {"queue": 1, "blob": 2, "cosmos": 3})
    assert "QueueEndpoint=http://127.0.0.1:1/a" in out["AZURE_STORAGE_CONNECTION_STRING"]
    assert "BlobEndpoint=http://127.0.0.1:2/a" in out["AZURE_STORAGE_CONNECTION_STRING"]
    assert out["AZURE_COSMOS_CONNECTION_STRING"].startswith("AccountEndpoint=https://127.0.0.1:3/;AccountKey=k")


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    """A proxy in front of nothing (no request it forwards could be answered), on its own loop thread."""
    loop = asyncio.new_event_loop()
    fault = FaultProxy([Route("queue", 0, "http://127.0.0.1:9")], FaultPlan())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(fault.start(), loop).result(10)
    try:
        yield fault
    finally:
        asyncio.run_coroutine_threadsafe(fault.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def _queue(port: int) -> QueueClient:
    conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};"
            f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    return QueueClient.from_connection_string(conn, "q", retry_total=0)


def test_the_storage_sdk_reads_the_proxys_503_as_server_busy(proxy: FaultProxy) -> None:
    proxy.plan = FaultPlan(rules=(Rule.parse("queue=503@1"),))
    with pytest.raises(HttpResponseError) as caught:
        _queue(proxy.ports["queue"]).send_message("x")
    assert caught.value.status_code == 503 and caught.value.error_code == "ServerBusy"
    proxy.plan = FaultPlan(rules=(Rule.parse("queue/send=500@1"),))
    with pytest.raises(HttpResponseError) as caught:
        _queue(proxy.ports["queue"]).send_message("x")
    assert caught.value.status_code == 500 and caught.value.error_code == "OperationTimedOut"
    assert proxy.stats.injected == {"queue/send/503": 1, "queue/send/500": 1}


def test_a_reset_drops_the_connection_without_an_answer(proxy: FaultProxy) -> None:
    proxy.plan = FaultPlan(rules=(Rule.parse("*=reset@1"),))
    with pytest.raises((ServiceRequestError, ServiceResponseError)):
        _queue(proxy.ports["queue"]).send_message("x")


def test_a_rate_limited_queue_is_refused_past_its_limit(proxy: FaultProxy) -> None:
    proxy.plan = FaultPlan(queue_rates={"q": 2})
    answers = []
    for _ in range(4):
        try:
            _queue(proxy.ports["queue"]).send_message("x")
        except HttpResponseError as exc:
            answers.append(exc.error_code)
        except Exception as exc:  # forwarded to nothing: the limiter let it through
            answers.append(type(exc).__name__)
    assert answers.count("ServerBusy") == 2, answers


def test_cosmos_answers_carry_azures_headers() -> None:
    from flowcraft_celery.devtools.faultproxy import fault_answer

    throttled = fault_answer("cosmos", "429", 100)
    assert throttled.status == 429 and throttled.headers["x-ms-retry-after-ms"] == "100"
    assert throttled.headers["x-ms-substatus"] == "3200"
    assert fault_answer("cosmos", "408", 100).status == 408 and fault_answer("cosmos", "503", 100).status == 503


def test_a_partition_over_its_request_units_gets_429_with_the_wait_until_it_has_budget() -> None:
    from types import SimpleNamespace

    proxy = FaultProxy([Route("cosmos", 0, "https://127.0.0.1:9", tls=True)], FaultPlan(partition_ru=12))
    route = proxy.routes[0]

    def write(partition: str) -> Any:
        request = SimpleNamespace(path="/dbs/d/colls/c/docs", headers={"x-ms-documentdb-partitionkey": partition})
        return proxy._limited(route, "docs:upsert", request)  # type: ignore[arg-type]

    assert write('["r1"]') is None and write('["r1"]') is None  # 2 writes x 6 RU: the second's budget
    refused = write('["r1"]')
    assert refused is not None and refused.status == 429 and int(refused.headers["x-ms-retry-after-ms"]) > 0
    assert write('["r2"]') is None  # another partition has its own budget
