"""Idle live runs cost reconcile nothing: a run awaiting an approval and a parent waiting for its
child run are looked at once after they go quiet, then no pass touches them (no Cosmos, Redis or
queue request for them) until an event moves them on, and each still ends as it should: the
approved run completes, and the parent whose child was cancelled hears of it even though the news
is only found by reconcile (cancelling a child sends its parent nothing).

No worker process: node messages are executed here (`settle`), with the real stores and queue.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from flowcraft_celery.distributed.client import Client
from flowcraft_celery.distributed.reconcile.passes import ReconcileReport, reconcile
from flowcraft_celery.distributed.runs.publishing import child_run_id, node_task_name
from flowcraft_celery.model.graph import Graph
from flowcraft_celery.stores.base import FINAL_STATES
from flowcraft_celery.stores.cosmos_client import request_counts
from tests.integration.distributed.test_retention import Services, open_services

#: The stall threshold of this test's passes (the default is 60 s).
STALL = 2.0


@pytest.fixture(scope="module")
def services(services_env: dict[str, str]) -> Iterator[Services]:
    with open_services(services_env) as state:
        yield state


def settle(client: Client, run_id: str, blueprint_id: str) -> str:
    """Execute the run's node messages here until it ends, awaits, sleeps or waits for its child run."""
    rt = client.runtime
    graph = Graph(rt.blueprints[blueprint_id])
    for _ in range(20):
        doc = rt.statuses.get(run_id)
        if doc is None or doc.get("status") in FINAL_STATES:
            return run_id
        awaiting = set(rt.ledger.awaiting(run_id))
        todo = [m for t, m in rt.ledger.pending(run_id).items()
                if t not in awaiting and not m.get("wake") and not m.get("childRun")]
        if not todo:
            return run_id
        for message in todo:
            result = client.app.tasks[node_task_name(graph.nodes[message["node"]].uses)].apply(kwargs={"msg": message})
            assert not result.failed(), result.traceback
    raise AssertionError(f"run {run_id} of {blueprint_id} did not settle")


def _pass(services: Services) -> tuple[ReconcileReport, int]:
    """One pass once every run has been idle past STALL; its report and its Cosmos requests (queue
    requests are not counted: the transport's own threads may send some meanwhile)."""
    time.sleep(STALL + 0.5)
    before = sum(request_counts().values())
    report = reconcile(services.other.app, services.other.runtime, stall_seconds=STALL)
    return report, sum(request_counts().values()) - before


def test_awaiting_runs_and_subflow_parents_cost_no_pass_until_an_event_moves_them(services: Services) -> None:
    client = services.other  # a deployment of its own: only this test's runs are due
    waiting = settle(client, client.start("rt-wait").run_id, "rt-wait")
    parent = settle(client, client.start("rt-parent").run_id, "rt-parent")
    child = settle(client, child_run_id(parent, "kid", 0, 1), "rt-sleep")
    assert client.status(waiting)["status"] == "awaiting"
    assert client.status(child)["wakeAt"] > time.time() + 3000

    report, _ = _pass(services)
    assert report.parked == 2 and report.republished == 0, report  # the waiting run and the parent
    for _ in range(2):
        report, requests = _pass(services)
        assert report.stalled == 0 and requests == 0, (report, requests)

    client.resume(waiting, "approve")
    settle(client, waiting, "rt-wait")
    assert client.status(waiting)["status"] == "completed"
    client.cancel(child)
    report, _ = _pass(services)
    assert report.republished == 1, report  # the parent is told its child ended
    for message in client.runtime.ledger.pending(parent).values():  # the news reconcile sent
        graph = Graph(client.runtime.blueprints["rt-parent"])
        node_task = client.app.tasks[node_task_name(graph.nodes[message["node"]].uses)]
        node_task.apply(kwargs={"msg": {**message, "child": {"runId": child, "status": "cancelled"}}})
    assert client.status(parent)["status"] == "failed"
    assert "cancelled" in str(client.status(parent)["errors"])
    report, requests = _pass(services)
    assert report.stalled == 0 and requests == 0, (report, requests)


def test_a_pass_looks_at_no_more_runs_than_its_budget_and_the_next_pass_goes_on(services: Services) -> None:
    client = services.default  # a deployment of its own: only this test's runs are due
    runs = {client.start("rt-fan").run_id for _ in range(7)}  # no worker: their start messages wait queued
    threshold = 15.0  # a run looked at is due again after it: longer than the four passes take
    time.sleep(threshold + 0.5)
    looked = []
    for _ in range(4):
        report = reconcile(client.app, client.runtime, stall_seconds=threshold, budget=3)
        assert report.republished == 0, report  # queued, not lost
        looked.append(report.stalled)
    assert looked == [3, 3, 1, 0]
    for run_id in runs:
        assert client.status(run_id)["status"] == "running"
