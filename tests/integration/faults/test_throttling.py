"""Throttling is back-pressure: through a fault proxy saying no as Azure does, every run completes,
each node runs once, nothing is re-published, and a rate-limited queue caps throughput.

One private Azurite / Cosmos emulator / Redis set and one private fault proxy in front of it for
the module; the workers, beat and this test's client all talk to Azure services through the proxy.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from flowcraft_celery.devtools.faultproxy import FaultPlan, Rule
from flowcraft_celery.distributed.ops.metrics import FlowcraftCollector
from tests.integration.faults import fault_nodes
from tests.integration.faults.kit import FaultKit, assert_recorded_once
from tests.integration.faults.proxy import PrivateProxy, proxied_fault_kit
from tests.integration.polling import wait_for

pytestmark = pytest.mark.integration

#: Concurrent runs of the 11-node fan-out/fan-in `ft-fan`.
RUNS = 20
RUN_TIMEOUT = 120.0
#: 10 % of Cosmos requests 429 (retry after 100 ms), 10 % of queue requests 503, 1 % held 2 s, 1 % of
#: all requests' connections reset before an answer.
THROTTLED = FaultPlan(rules=(Rule.parse("cosmos=429@0.1"), Rule.parse("queue=503@0.1"), Rule.parse("*=reset@0.01")),
                      tail=0.01, tail_seconds=2.0, retry_after_ms=100)
#: Message operations per second the rate-limited queue accepts (Azure's 2,000, scaled down).
QUEUE_RATE = 15.0


@dataclass
class Throttled:
    kit: FaultKit
    proxy: PrivateProxy

    def republished(self) -> int:
        """Messages re-published by every reconcile pass so far (from the workers' logs)."""
        reports = re.findall(r"reconcile: (\{[^}]*\})", self.kit.logs())
        return sum(json.loads(r.replace("'", '"'))["republished"] for r in reports)


@pytest.fixture(scope="module")
def throttled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Throttled]:
    with proxied_fault_kit(tmp_path_factory.mktemp("throttling"), "throttle", FLOWCRAFT_STALL_SECONDS="20",
                           FLOWCRAFT_RECONCILE_INTERVAL="3") as made:
        kit, proxy = made.kit, made.proxy
        group = kit.group()
        group.worker(concurrency=2)
        group.worker(concurrency=2)
        group.beat()
        group.wait_ready(90)
        yield Throttled(kit, proxy)


@pytest.mark.timeout(170)
def test_throttled_runs_all_complete_with_each_node_run_once(throttled: Throttled) -> None:
    kit, proxy = throttled.kit, throttled.proxy
    proxy.set_plan(THROTTLED)
    try:
        started = time.monotonic()
        runs = kit.start("ft-fan", RUNS)
        docs = kit.wait_final(runs, RUN_TIMEOUT)
        elapsed = time.monotonic() - started
    finally:
        proxy.set_plan(FaultPlan())
    for run_id, doc in docs.items():
        assert doc["status"] == "completed", (run_id, doc.get("errors"))
        assert_recorded_once(kit, run_id, fault_nodes.wide_nodes())
        assert kit.calls(run_id) == dict.fromkeys(fault_nodes.wide_nodes(), 1), kit.calls(run_id)
        assert {f"k.p{i}" for i in range(fault_nodes.WIDTH)} <= set(kit.client.result(run_id)["context"])
    executions = sum(sum(kit.calls(r).values()) for r in runs)
    assert executions == RUNS * len(fault_nodes.wide_nodes())
    stats = proxy.stats()
    injected = stats["injected"]
    throttled_queue = sum(n for k, n in injected.items() if k.startswith("queue/"))
    throttled_cosmos = sum(n for k, n in injected.items() if k.startswith("cosmos/"))
    assert throttled_queue > 20 and throttled_cosmos > 20 and stats["delayed"] > 0, stats
    assert throttled.republished() == 0, "a reconcile pass re-published work during throttling"
    assert kit.dead_letters() == 0
    # the logs say why it was slower, once per episode and process, not once per throttled request
    logs = kit.logs()
    episodes = re.findall(r"(Azure Queue Storage|Cosmos DB) is throttling", logs)
    assert {"Azure Queue Storage", "Cosmos DB"} <= set(episodes), "throttling not in the logs"
    assert len(episodes) <= 2 * 7, episodes  # 2 services x (2 workers x 3 processes + beat)
    assert len(episodes) * 5 < throttled_queue + throttled_cosmos
    # ... and in `flowcraft-celery metrics` (each process reports every few seconds)
    wait_for(lambda: _throttled_metric(kit) > 0, 20, "flowcraft_throttled_answers in the metrics")
    print(f"{RUNS} runs in {elapsed:.1f} s; throttled queue {throttled_queue}, cosmos {throttled_cosmos}; "
          f"proxy requests {sum(stats['requests'].values())}")


def _throttled_metric(kit: FaultKit) -> float:
    """The deployment's flowcraft_throttled_answers, summed, as the metrics endpoint exports them."""
    families = FlowcraftCollector(kit.client.app, queue_interval=3600, runs_interval=3600).collect()
    return sum(s.value for f in families if f.name == "flowcraft_throttled_answers" for s in f.samples)


@pytest.mark.timeout(120)
def test_a_rate_limited_queue_caps_throughput_and_every_run_completes(throttled: Throttled) -> None:
    kit, proxy = throttled.kit, throttled.proxy
    queue = kit.queue().queue_name
    proxy.control.reset_stats() if proxy.control else None
    proxy.set_plan(FaultPlan(queue_rates={queue: QUEUE_RATE}))
    try:
        started = time.monotonic()
        runs = kit.start("ft-fan", 10)
        docs = kit.wait_final(runs, 90)
        elapsed = time.monotonic() - started
        stats = proxy.stats()
    finally:
        proxy.set_plan(FaultPlan())
    for run_id, doc in docs.items():
        assert doc["status"] == "completed", (run_id, doc.get("errors"))
        assert kit.calls(run_id) == dict.fromkeys(fault_nodes.wide_nodes(), 1), kit.calls(run_id)
    forwarded = stats["forwarded_by_queue"].get(queue, 0)
    refused = stats["limited"].get(f"queue/{queue}", 0)
    rate = forwarded / elapsed
    print(f"rate-limited queue: {forwarded} message operations in {elapsed:.1f} s ({rate:.1f}/s, limit "
          f"{QUEUE_RATE:g}/s), {refused} refused")
    assert refused > 0, "the limit never bit"
    assert forwarded <= QUEUE_RATE * elapsed + QUEUE_RATE  # one second's burst
    assert rate >= 0.3 * QUEUE_RATE, "throughput collapsed far below the limit"
