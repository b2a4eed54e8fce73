"""Finished runs expire and `purge` removes them from every store; waiting and sleeping runs stay.

Node messages run in this process (`task.apply`) over the real services, so a run ends here as it
would in a worker; what ends a run and what it leaves is the same code either way. The Cosmos
emulator has no TTL and no transactional batch: a finished run's status item gets its `ttl` (and
reads treat it as gone once it has passed) and its Redis keys really expire, while its context
items wait for `purge`, which the second test checks removes everything.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from azure.storage.queue import QueueServiceClient

from flowcraft_celery.distributed.client import Client
from flowcraft_celery.distributed.runs.errors import RunError
from flowcraft_celery.distributed.runs.publishing import node_task_name
from flowcraft_celery.model.graph import Graph
from flowcraft_celery.stores.base import FINAL_STATES
from flowcraft_celery.stores.cosmos_client import get_client
from tests.integration import names
from tests.integration.celery_settings import settings_applied
from tests.integration.polling import wait_for

ROOT = Path(__file__).resolve().parents[3]
NODES = "tests.integration.distributed.retention_nodes"
#: The short retention of the expiry test: a Cosmos TTL and a Redis expiry of 3 s.
SHORT_DAYS = 2.5 / 86400
SHORT_TTL = 3


@dataclass
class Services:
    """Clients of one app with a short retention and one with the default, over unique names."""

    short: Client
    default: Client
    other: Client
    env: dict[str, str]
    tag: str
    redis: redis.Redis

    def items(self, container: str, run_id: str) -> list[dict[str, Any]]:
        """Every item of the run in a Cosmos container, expired or not (the emulator keeps them)."""
        proxy = get_client().get_database_client(self.tag).get_container_client(container)
        return list(proxy.query_items("SELECT * FROM c WHERE c.runId = @run",
                                      parameters=[{"name": "@run", "value": run_id}], partition_key=run_id))

    def keys(self, run_id: str) -> list[str]:
        """The run's Redis keys."""
        return [k.decode() for k in self.redis.scan_iter(f"{self.tag}:*", count=1000) if run_id in k.decode()]

    def everything(self, run_id: str) -> tuple[list[str], list[str], list[str]]:
        """The ids of the run's status and context items and its Redis keys, sorted."""
        return (sorted(i["id"] for i in self.items("runs", run_id)),
                sorted(i["id"] for i in self.items("context", run_id)), sorted(self.keys(run_id)))

    def purge(self, *args: str) -> str:
        """Run `flowcraft-celery purge ARGS` as an operator would; its output."""
        done = subprocess.run([sys.executable, "-m", "flowcraft_celery.cli", "purge", *args], cwd=ROOT,
                              env={**os.environ, **self.env}, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture(scope="module")
def services(services_env: dict[str, str]) -> Iterator[Services]:
    """Unique queue, key prefix and database; the environment the CLI sees too."""
    with open_services(services_env) as state:
        yield state


@contextlib.contextmanager
def open_services(services_env: dict[str, str]) -> Iterator[Services]:
    """Clients over a unique queue, key prefix and database, all removed at the end."""
    tag = names.unique_name("retention")
    env = {**services_env, "FLOWCRAFT_DEFAULT_QUEUE": tag, "FLOWCRAFT_KEY_PREFIX": f"{tag}:",
           "FLOWCRAFT_COSMOS_DATABASE": tag, "FLOWCRAFT_NODE_MODULES": NODES,
           "FLOWCRAFT_BLUEPRINTS": f"{NODES}:blueprints", "FLOWCRAFT_TASK_EVENTS": "false", "PYTHONPATH": str(ROOT)}
    with settings_applied(env):
        from flowcraft_celery.distributed.app import create_app

        short_app = create_app()
        short_app.conf.flowcraft_retention_days = SHORT_DAYS
        other_app = create_app()  # another deployment in the same database and Redis prefix
        other_app.conf.task_default_queue = f"{tag}-other"
        state = Services(Client(short_app), Client(create_app()), Client(other_app), env, tag,
                         redis.Redis.from_url(env["REDIS_URL"]))
        try:
            yield state
        finally:
            for key in state.redis.scan_iter(f"{tag}:*"):
                state.redis.delete(key)
            queues = QueueServiceClient.from_connection_string(env["AZURE_STORAGE_CONNECTION_STRING"])
            for queue in queues.list_queues(name_starts_with=tag):
                with contextlib.suppress(Exception):
                    queues.delete_queue(queue.name)
            with contextlib.suppress(Exception):
                get_client().delete_database(tag)


def settle(client: Client, run_id: str, blueprint_id: str) -> str:
    """Execute the run's node messages here until it ends, awaits or only sleeps."""
    rt = client.runtime
    graph = Graph(rt.blueprints[blueprint_id])
    for _ in range(50):
        doc = rt.statuses.get(run_id)
        if doc is None or doc.get("status") in FINAL_STATES:
            return run_id
        awaiting = set(rt.ledger.awaiting(run_id))
        todo = [m for t, m in rt.ledger.pending(run_id).items() if t not in awaiting and not m.get("wake")]
        if not todo:
            return run_id
        for message in todo:
            task = client.app.tasks[node_task_name(graph.nodes[message["node"]].uses)]
            result = task.apply(kwargs={"msg": message})
            assert not result.failed(), result.traceback
    raise AssertionError(f"run {run_id} of {blueprint_id} did not settle")


def drive(client: Client, blueprint_id: str) -> str:
    """Start a run and settle it."""
    return settle(client, client.start(blueprint_id).run_id, blueprint_id)


def _gone(client: Client, run_id: str) -> bool:
    with contextlib.suppress(RunError):
        client.status(run_id)
        return False
    return True


def test_finished_runs_status_and_redis_keys_expire_while_waiting_and_sleeping_runs_stay(services: Services) -> None:
    client = services.short
    completed = drive(client, "rt-fan")
    failed = drive(client, "rt-fail")
    cancelled = drive(client, "rt-wait")
    assert client.cancel(cancelled)
    waiting = drive(client, "rt-wait")
    sleeping = drive(client, "rt-sleep")
    assert [client.status(r)["status"] for r in (completed, failed, cancelled, waiting, sleeping)] == \
        ["completed", "failed", "cancelled", "awaiting", "running"]
    assert client.status(sleeping).get("wakeAt")

    for run_id in (completed, failed, cancelled):
        assert [item.get("ttl") for item in services.items("runs", run_id)] == [SHORT_TTL]
        keys = services.keys(run_id)
        ttls = {k: services.redis.ttl(k) for k in keys}
        assert ttls and all(0 < ttl <= SHORT_TTL for ttl in ttls.values()), ttls
    assert any(":join:" in k for k in services.keys(completed)), "the fan-out's join keys were not given an expiry"
    for run_id in (waiting, sleeping):
        assert all("ttl" not in item for item in services.items("runs", run_id) + services.items("context", run_id))
        # (`touched` only paces the refreshes of lastUpdated: it lapses after a touch interval by design)
        assert all(services.redis.ttl(k) == -1 or services.redis.ttl(k) > 3600
                   for k in services.keys(run_id) if not k.endswith(":touched"))

    finished = (completed, failed, cancelled)
    wait_for(lambda: all(_gone(client, r) for r in finished), 20, "finished runs' status to expire")
    wait_for(lambda: not any(services.keys(r) for r in finished), 20, "finished runs' Redis keys to expire")
    assert client.list_runs(limit=100) and {d["runId"] for d in client.list_runs(limit=100)} >= {waiting, sleeping}
    assert not {d["runId"] for d in client.list_runs(limit=100)} & set(finished)

    assert client.status(waiting)["status"] == "awaiting" and client.status(sleeping)["status"] == "running"
    for run_id in (waiting, sleeping):
        assert client.runtime.contexts.snapshot(run_id)["seen.start"] is True
        assert services.keys(run_id)
    client.resume(waiting)
    settle(client, waiting, "rt-wait")
    assert client.status(waiting)["status"] == "completed"
    assert client.runtime.contexts.snapshot(waiting)["seen.after"] is True
    wait_for(lambda: not services.keys(waiting), 20, "the resumed run's Redis keys to expire once it completed")


_REMOVED = re.compile(r"remove (\d+) status item\(s\), (\d+) context and output item\(s\), (\d+) Redis key\(s\)")


def test_purge_removes_old_finished_runs_from_every_store_and_keeps_waiting_ones(services: Services) -> None:
    client = services.default
    completed = drive(client, "rt-fan")
    failed = drive(client, "rt-fail")
    waiting = drive(client, "rt-wait")
    sleeping = drive(client, "rt-sleep")
    elsewhere = drive(services.other, "rt-fan")  # another deployment's finished run: not purge's
    assert services.other.status(elsewhere)["status"] == "completed"
    elsewhere_items = services.everything(elsewhere)
    assert all(elsewhere_items)
    finished_keys = {r: services.keys(r) for r in (completed, failed)}
    assert all(finished_keys.values())

    assert "nothing to purge" in services.purge("--older-than", "1d")
    dry = services.purge("--older-than", "0s", "--dry-run")
    assert dry.startswith("dry run: would purge "), dry
    would = _REMOVED.search(dry.replace("would remove", "remove"))
    assert would is not None, dry
    assert int(would.group(1)) >= 2 and int(would.group(2)) >= 8 and int(would.group(3)) >= 6, dry
    assert all(services.keys(r) for r in (completed, failed)) and services.items("context", completed), \
        "a dry run removed something"

    done = services.purge("--older-than", "0s")
    assert done.startswith("purged "), done
    removed = _REMOVED.search(done.replace("removed", "remove"))
    assert removed is not None and removed.groups() == would.groups(), (dry, done)
    assert "completed" in done and "failed" in done

    for run_id in (completed, failed):
        assert services.items("runs", run_id) == [] and services.items("context", run_id) == []
        assert services.keys(run_id) == []
    for run_id, status in ((waiting, "awaiting"), (sleeping, "running")):
        assert client.status(run_id)["status"] == status
        assert client.runtime.contexts.snapshot(run_id)["seen.start"] is True
        assert services.keys(run_id)
    assert services.everything(elsewhere) == elsewhere_items, "purge removed another deployment's run"


def test_a_reconcile_pass_keeps_no_celery_result(services: Services) -> None:
    app = services.default.app

    def kept_result() -> str:
        """The control: a task whose result is kept."""
        return "kept"

    kept = app.task(name="rt.kept-result", shared=False, store_eager_result=True)(kept_result)
    reconcile_task = app.tasks["flowcraft.reconcile"]
    reconcile_task.store_eager_result = True  # eager runs store results like a worker's, unless ignored
    try:
        control = kept.apply(task_id=f"{services.tag}-control")
        passed = reconcile_task.apply(kwargs={"stall_seconds": 3600}, task_id=f"{services.tag}-reconcile")
    finally:
        del reconcile_task.store_eager_result
    assert control.successful() and passed.successful(), passed.traceback
    assert app.AsyncResult(control.id).state == "SUCCESS", "the control's result was not stored"
    assert app.AsyncResult(passed.id).state == "PENDING", "a reconcile pass left a Celery result"
