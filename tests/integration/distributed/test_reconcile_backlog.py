"""Reconcile under a backlog: many node messages wait in the queue while no worker runs, past a
short stall threshold. Reconcile must re-send none of them (they are queued, not lost), so a
backlog never grows because of it; once they are really gone, it re-sends each exactly once.

No worker process: each run's start node is executed here (`task.apply`), as a worker would before
the workers stopped, and its fan-out's messages go to the real Azure queue. A message that a
live worker has taken off the queue but not started (prefetched behind a long node) is not re-sent
either. The killed-worker counterpart (a message in flight when its worker died is still re-driven) is
tests/integration/faults/test_reconcile_evidence.py::test_a_killed_workers_message_is_still_re_driven.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

from flowcraft_celery.devtools.workers import WorkerGroup
from flowcraft_celery.distributed.reconcile.in_flight import WorkerHands
from flowcraft_celery.distributed.reconcile.passes import ReconcileReport, reconcile
from flowcraft_celery.distributed.runs.publishing import node_task_name
from flowcraft_celery.model.graph import Graph
from tests.integration.distributed.retention_nodes import LONG, WIDE
from tests.integration.distributed.test_retention import ROOT, Services, open_services, wait_for
from transports.azurequeue.naming import azure_queue_name
from transports.azurequeue.options import Options

#: Task messages per Azure message in a node's fan-out (the transport's default `bundle_size`).
BUNDLE_SIZE = Options().bundle_size

RUNS = 8
#: The stall threshold of this test's passes (the default is 60 s).
STALL = 2.0


@pytest.fixture(scope="module")
def services(services_env: dict[str, str]) -> Iterator[Services]:
    """The retention tests' clients over a unique queue, key prefix and database."""
    with open_services(services_env) as state:
        yield state


def _queue(services: Services) -> QueueClient:
    """The Azure queue of the `other` deployment's default queue."""
    app = services.other.app
    prefix = str((app.conf.broker_transport_options or {}).get("queue_name_prefix") or "")
    name = azure_queue_name(str(app.conf.task_default_queue), prefix)
    return QueueClient.from_connection_string(services.env["AZURE_STORAGE_CONNECTION_STRING"], name)


def _length(queue: QueueClient) -> int:
    """Messages on the queue, visible or not (0 when it does not exist)."""
    try:
        return int(queue.get_queue_properties().approximate_message_count or 0)
    except ResourceNotFoundError:
        return 0


def _pass(services: Services) -> ReconcileReport:
    """One reconcile pass with the short threshold, once every run has been idle past it."""
    time.sleep(STALL + 0.5)
    return reconcile(services.other.app, services.other.runtime, stall_seconds=STALL)


def test_reconcile_re_sends_nothing_still_queued_in_a_backlog_and_lost_messages_once(services: Services) -> None:
    client = services.other  # a deployment of its own: only this test's runs are in its queue
    rt = client.runtime
    queue = _queue(services)
    graph = Graph(rt.blueprints["rt-wide"])
    runs = [client.start("rt-wide").run_id for _ in range(RUNS)]
    for run_id in runs:  # what a worker did before the workers stopped: each start node ran
        (message,) = rt.ledger.pending(run_id).values()
        result = client.app.tasks[node_task_name(graph.nodes["start"].uses)].apply(kwargs={"msg": message})
        assert not result.failed(), result.traceback
    backlog = RUNS * WIDE
    assert sum(len(rt.ledger.pending(r)) for r in runs) == backlog
    depth = _length(queue)  # Azure messages: each start node's successors went out in bundles
    assert depth >= RUNS * math.ceil(WIDE / BUNDLE_SIZE), depth

    report = _pass(services)
    assert report.stalled >= RUNS and report.reconciled == RUNS, report
    assert report.republished == 0 and report.queued == backlog, report
    assert _length(queue) == depth, "reconcile added to the backlog"
    report = _pass(services)
    assert report.republished == 0 and report.queued == backlog, report
    assert _length(queue) == depth

    queue.clear_messages()  # now they are really lost (reconcile re-sends them one by one)
    wait_for(lambda: _length(queue) == 0, 30, "the queue to be empty")
    report = _pass(services)
    assert report.republished == backlog and report.queued == 0, report
    assert _length(queue) == backlog
    report = _pass(services)  # what it re-sent waits in the queue: not re-sent again
    assert report.republished == 0 and report.queued == backlog, report
    assert _length(queue) == backlog


def test_reconcile_leaves_a_message_a_live_worker_prefetched_and_has_not_started(
        services: Services, tmp_path: Path) -> None:
    client = services.default
    app, rt = client.app, client.runtime
    # one pool process that receives ahead (Celery's default multiplier; ours is 1): it prefetches
    # more messages than it runs
    with WorkerGroup({**services.env, "FLOWCRAFT_PREFETCH_MULTIPLIER": "4"}, tmp_path, cwd=ROOT) as group:
        group.worker(concurrency=1)
        group.wait_ready(90)
        busy = client.start("rt-long").run_id
        wait_for(lambda: rt.coordination.holder(f"exec:{busy}:start@0") is not None, 60, "the long node to start")
        waiting = client.start("rt-long").run_id  # taken off the queue, waits behind the long node
        wait_for(lambda: WorkerHands(app).hold(waiting, "start@0"), 30, "the worker to prefetch the second run")
        report = reconcile(app, rt, stall_seconds=0.5)
        assert rt.coordination.holder(f"exec:{waiting}:start@0") is None, "the second run started too soon"
        assert report.republished == 0 and report.queued == 0 and report.running >= 1, report
        for run_id in (busy, waiting):
            assert client.wait(run_id, 2 * LONG + 60)["status"] == "completed"
        assert sum(log.read_text().count("] received") for log in group.logs) == 2, "a message was sent twice"
