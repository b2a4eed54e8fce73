"""Outages are infrastructure errors, poison nodes end, reconcile re-sends only lost work.

One private Redis / Azurite / Cosmos emulator set for the module (Cosmos and Azurite are paused
here, never the shared dev services); two workers and TWO beats run throughout, so every test
also shows that concurrent reconcilers change nothing.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen

import pytest

from flowcraft_celery.devtools.workers import WorkerGroup
from tests.integration.faults import fault_nodes
from tests.integration.faults.kit import FaultKit, assert_recorded_once, fault_kit
from tests.integration.faults.private import PrivateServices
from tests.integration.polling import wait_for

RUN_TIMEOUT = 180.0
#: Crashes allowed before a node fails its run (the default is 5; fewer keeps the test short).
CRASH_LIMIT = 3


@dataclass
class Outages:
    kit: FaultKit
    services: PrivateServices
    group: WorkerGroup
    workers: list[Popen[bytes]] = field(default_factory=list)

    def republished(self) -> int:
        """Messages re-published by every reconcile pass so far (from the workers' logs)."""
        reports = re.findall(r"reconcile: (\{[^}]*\})", self.kit.logs())
        return sum(json.loads(r.replace("'", '"'))["republished"] for r in reports)


@pytest.fixture(scope="module")
def outages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outages]:
    folder: Path = tmp_path_factory.mktemp("outages")
    with PrivateServices(folder / "services") as services, \
            fault_kit(services.env(), folder, "outages", FLOWCRAFT_STALL_SECONDS="4",
                      FLOWCRAFT_RECONCILE_INTERVAL="2", FLOWCRAFT_VISIBILITY_TIMEOUT="10",
                      FLOWCRAFT_MAX_NODE_CRASHES=str(CRASH_LIMIT)) as kit:
        group = kit.group()
        workers = [group.worker(concurrency=2), group.worker(concurrency=2)]
        group.beat()
        group.beat()
        group.wait_ready(90)
        yield Outages(kit, services, group, workers)


def test_an_output_over_the_store_limit_fails_the_node_at_once(outages: Outages) -> None:
    kit = outages.kit
    run_id = kit.start("ft-huge")[0]
    doc = kit.client.wait(run_id, RUN_TIMEOUT)
    assert doc["status"] == "failed"
    assert "over the store's limit" in doc["errors"][0]["message"] and doc["errors"][0]["nodeId"] == "big"
    assert kit.calls(run_id) == {"big": 1}
    assert kit.outputs(run_id) == []


def test_a_value_that_is_not_json_fails_the_node_at_once(outages: Outages) -> None:
    kit = outages.kit
    runs = {where: kit.start(f"ft-odd-{where}")[0] for where in ("context", "output")}
    for where, run_id in runs.items():
        doc = kit.client.wait(run_id, RUN_TIMEOUT)
        assert doc["status"] == "failed", (where, doc)
        assert "is not JSON" in doc["errors"][0]["message"] and doc["errors"][0]["nodeId"] == "n", (where, doc)
        assert kit.calls(run_id) == {"n": 1}, where  # maxRetries 3, yet no retry can fix it
        assert kit.outputs(run_id) == []


def test_a_node_waiting_out_its_retry_delay_is_not_re_sent(outages: Outages) -> None:
    kit = outages.kit
    run_id = kit.start("ft-retry")[0]
    doc = kit.client.wait(run_id, RUN_TIMEOUT)
    assert doc["status"] == "completed", doc.get("errors")
    # maxRetries 3 (total attempts), failing twice: exactly 3 attempts, though each 8 s delay
    # outlasts the 4 s stall threshold and two beats reconcile every 2 s meanwhile (a re-sent copy
    # at an old attempt number would add attempts)
    assert kit.calls(run_id) == {"r": 3, "b": 1}
    assert kit.client.result(run_id)["context"]["_outputs.r"] == "attempt 3"
    assert_recorded_once(kit, run_id, {"r", "b"})


def test_a_healthy_node_running_past_the_stall_threshold_is_not_re_sent(outages: Outages) -> None:
    kit = outages.kit
    before = outages.republished()
    run_id = kit.start("ft-slow")[0]
    doc = kit.client.wait(run_id, RUN_TIMEOUT)
    assert doc["status"] == "completed", doc.get("errors")
    assert kit.calls(run_id) == {"long": 1, "b": 1}
    assert_recorded_once(kit, run_id, {"long", "b"})
    assert outages.republished() == before


def test_a_node_that_keeps_crashing_its_worker_fails_the_run_and_is_dead_lettered(outages: Outages) -> None:
    kit = outages.kit
    dead_before = kit.dead_letters()
    run_id = kit.start("ft-crashloop")[0]
    doc = kit.client.wait(run_id, RUN_TIMEOUT)
    assert doc["status"] == "failed"
    message = doc["errors"][0]["message"]
    assert doc["errors"][0]["nodeId"] == "boom" and f"crashed its worker process {CRASH_LIMIT} times" in message
    calls = kit.calls(run_id)
    assert calls["a"] == 1 and "b" not in calls and calls["boom"] == CRASH_LIMIT, calls
    assert_recorded_once(kit, run_id, {"a"})
    wait_for(lambda: kit.dead_letters() > dead_before, 30, "the crashing node's message in the dead-letter queue")
    assert any(f"node 'boom' crashed its worker process {CRASH_LIMIT} times" in reason
               for reason in kit.dead_letter_reasons())
    wait_for(lambda: kit.queue_length() == 0, 60, "no copy of it left on the queue")


def test_runs_survive_repeated_kill_9_of_workers(outages: Outages) -> None:
    kit, group = outages.kit, outages.group
    runs = kit.start("ft-wide", 8)
    for _ in range(2):
        wait_for(lambda: sum(sum(kit.calls(r).values()) for r in runs) > 0, 60, "work under way")
        time.sleep(2)
        victim = outages.workers.pop(0)
        group.kill(victim)
        outages.workers.append(group.worker(concurrency=2))
    docs = kit.wait_final(runs, RUN_TIMEOUT)
    for run_id, doc in docs.items():
        assert doc["status"] == "completed", (run_id, doc.get("errors"))
        assert_recorded_once(kit, run_id, fault_nodes.wide_nodes())
        assert max(kit.calls(run_id).values()) <= 2, kit.calls(run_id)


def test_cosmos_paused_20_s_during_context_writes_fails_nothing(outages: Outages) -> None:
    kit = outages.kit
    runs = kit.start("ft-writes", 5)
    wait_for(lambda: sum(sum(kit.calls(r).values()) for r in runs) >= 6, 60, "context writes under way")
    outages.services.pause_for("cosmos", 20)
    docs = kit.wait_final(runs, RUN_TIMEOUT)
    for run_id, doc in docs.items():
        assert doc["status"] == "completed", (run_id, doc.get("errors"))
        assert_recorded_once(kit, run_id, fault_nodes.wide_nodes())
        context = kit.client.result(run_id)["context"]
        assert {f"k.p{i}" for i in range(fault_nodes.WIDTH)} <= set(context)
        # a node whose write to its context failed runs again; one whose output could not be
        # recorded does not (only the write is retried)
        calls = kit.calls(run_id)
        assert all(calls[n] == 1 for n in fault_nodes.wide_nodes() if not n.startswith("p")), calls
    logs = kit.logs()
    # the outage is told once per process, naming the endpoint, and that it is retried
    assert re.search(r"WARNING/\S+\] Cosmos DB at https?://\S+ does not answer \(.*\); retrying until it does", logs), \
        "no clear Cosmos outage in the logs"
    assert "UnpickleableExceptionWrapper" not in logs


def test_azurite_paused_60_s_loses_no_run(outages: Outages) -> None:
    kit = outages.kit
    runs = kit.start("ft-wide", 5)
    wait_for(lambda: sum(sum(kit.calls(r).values()) for r in runs) >= 6, 60, "the runs under way")
    outages.services.pause_for("azurite", 60)
    docs = kit.wait_final(runs, RUN_TIMEOUT)
    for run_id, doc in docs.items():
        assert doc["status"] == "completed", (run_id, doc.get("errors"))
        assert_recorded_once(kit, run_id, fault_nodes.wide_nodes())
        assert max(kit.calls(run_id).values()) <= 2, kit.calls(run_id)
