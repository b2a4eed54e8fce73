"""A subflow's child run that cannot start because a service does not answer is started later:
the parent node retries with back-off instead of failing the run, and the child runs once.

One private Azurite / Cosmos emulator / Redis set and a private fault proxy in front of it; the
child's only node goes to a queue of its own, which the proxy refuses (Azure's 503 ServerBusy, a
rate limit of almost nothing) until the test lifts it: only the child's start fails.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from flowcraft_celery.devtools.faultproxy import FaultPlan
from tests.integration import names
from tests.integration.faults.kit import is_final
from tests.integration.faults.proxy import ProxiedKit, proxied_fault_kit
from tests.integration.polling import wait_for

pytestmark = pytest.mark.integration

#: Messages per second the proxy lets through to the child's queue while it refuses: none in practice.
REFUSING = 0.001


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxiedKit]:
    with proxied_fault_kit(tmp_path_factory.mktemp("subflow-start"), "substart", FLOWCRAFT_START_TIMEOUT="3",
                           FLOWCRAFT_STORAGE_RETRY_TOTAL="2", FAULT_KID_QUEUE=names.unique_name("kids")) as made:
        kit = made.kit
        group = kit.group()
        group.worker(concurrency=2)
        group.worker(queues=kit.env["FAULT_KID_QUEUE"], concurrency=1)
        group.wait_ready(90)
        yield made


@pytest.mark.timeout(150)
def test_a_child_that_cannot_start_is_started_when_the_service_answers_and_runs_once(refusing: ProxiedKit) -> None:
    kit, proxy = refusing.kit, refusing.proxy
    kids = kit.queue(kit.env["FAULT_KID_QUEUE"]).queue_name
    proxy.set_plan(FaultPlan(queue_rates={kids: REFUSING}))
    try:
        (run_id,) = kit.start("ft-parent")
        wait_for(lambda: re.search(rf"node message of run {run_id}: .*; retry 2 in", kit.logs())
                 or is_final(kit.status(run_id)), 60, "the subflow node to retry its child's start twice")
        assert kit.status(run_id)["status"] == "running", kit.status(run_id).get("errors")
        refused = proxy.stats()["limited"].get(f"queue/{kids}", 0)
    finally:
        proxy.set_plan(FaultPlan())
    assert refused > 0, "the child's queue was never refused: the test proved nothing"
    started = time.monotonic()
    doc = kit.wait_final([run_id], 60)[run_id]
    assert doc["status"] == "completed", doc.get("errors")
    child_calls = [line for line in kit.calls_file.read_text().splitlines() if line.startswith(f"{run_id}.")]
    assert len(child_calls) == 1, child_calls
    assert kit.calls(run_id) == {"b": 1}
    assert kit.client.result(run_id)["context"].get("fromKid") == "k", "the child's value did not reach the parent"
    print(f"child started {time.monotonic() - started:.1f} s after the queue answered again; {refused} refused")
