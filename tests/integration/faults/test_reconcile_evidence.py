"""Reconcile re-publishes only work that is really lost: never what is still queued or running.

Breaks no service (the shared dev services, with this module's own queue, key prefix and
database); stops and kills only its own workers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowcraft_celery.distributed.reconcile.passes import reconcile
from tests.integration.faults import fault_nodes
from tests.integration.faults.kit import FaultKit, assert_completed_once, assert_recorded_once, fault_kit
from tests.integration.polling import wait_for

RUN_TIMEOUT = 150.0
BACKLOG = 8


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory, services_env: dict[str, str]) -> Iterator[FaultKit]:
    folder: Path = tmp_path_factory.mktemp("reconcile-evidence")
    with fault_kit(services_env, folder, "evidence", FLOWCRAFT_STALL_SECONDS="3",
                   FLOWCRAFT_RECONCILE_INTERVAL="2", FLOWCRAFT_VISIBILITY_TIMEOUT="8") as made:
        yield made


def test_a_backlog_is_never_re_published_and_lost_messages_are(kit: FaultKit) -> None:
    runs = kit.start("ft-wide", BACKLOG)  # no worker runs: every start message waits in the queue
    time.sleep(3)
    app, rt = kit.client.app, kit.client.runtime
    report = reconcile(app, rt, stall_seconds=1)
    assert report.stalled == BACKLOG and report.republished == 0 and report.queued == BACKLOG, report
    assert kit.queue_length() == BACKLOG
    kit.queue().clear_messages()  # now they are really lost
    wait_for(lambda: kit.queue_length() == 0, 30, "the queue to be empty")
    time.sleep(2)  # the first pass refreshed the runs; they are stalled again after a second
    report = reconcile(app, rt, stall_seconds=1)
    assert report.republished == BACKLOG, report
    workers = kit.group()
    workers.worker(concurrency=2)
    workers.wait_ready(90)
    docs = kit.wait_final(runs, RUN_TIMEOUT)
    assert_completed_once(kit, docs, fault_nodes.wide_nodes())
    kit.stop_all()


def test_a_killed_workers_message_is_still_re_driven(kit: FaultKit) -> None:
    group = kit.group()
    first = group.worker(concurrency=1)
    group.beat()
    group.wait_ready(90)
    run_id = kit.start("ft-slow")[0]
    wait_for(lambda: kit.calls(run_id).get("long") == 1, 60, "the long node to start")
    group.kill(first)
    group.worker(concurrency=1)
    group.wait_ready(90)
    doc = kit.client.wait(run_id, RUN_TIMEOUT)
    assert doc["status"] == "completed", doc.get("errors")
    assert kit.calls(run_id)["long"] == 2 and kit.calls(run_id)["b"] == 1
    assert_recorded_once(kit, run_id, {"long", "b"})
