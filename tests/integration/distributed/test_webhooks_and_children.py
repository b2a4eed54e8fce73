"""Webhook nodes resumed over real HTTP (`flowcraft-celery webhooks serve`), cancelling a
parent run cancels its running child runs, and a subflow node's retries each start a child run
of their own: real workers over Azurite, Cosmos and Redis."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from flowcraft_celery.devtools.workers import WorkerGroup
from flowcraft_celery.distributed.client import Client
from flowcraft_celery.distributed.runs.ending import notify_parent
from tests.integration import names
from tests.integration.celery_settings import celery_app_for
from tests.integration.distributed import semantics_nodes
from tests.integration.polling import wait_for

ROOT = Path(__file__).resolve().parents[3]
NODES = "tests.integration.distributed.semantics_nodes"
TIMEOUT = 120.0


@dataclass
class Deployment:
    """Two workers and the webhook server of this module, and a client."""

    client: Client
    base_url: str
    redis: redis.Redis

    def calls(self, run_id: str) -> dict[str, int]:
        raw: dict[bytes, bytes] = self.redis.hgetall(semantics_nodes.calls_key(run_id))  # type: ignore[assignment]
        return {k.decode(): int(v) for k, v in raw.items()}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, services_env: dict[str, str]) -> Iterator[Deployment]:
    tag = names.unique_name("semantics")
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}/hooks"
    env = {**services_env, "FLOWCRAFT_DEFAULT_QUEUE": tag, "FLOWCRAFT_KEY_PREFIX": f"{tag}:",
           "FLOWCRAFT_COSMOS_DATABASE": tag, "FLOWCRAFT_NODE_MODULES": NODES,
           "FLOWCRAFT_BLUEPRINTS": f"{NODES}:blueprints", "FLOWCRAFT_TASK_EVENTS": "false",
           "FLOWCRAFT_WEBHOOK_BASE_URL": base_url}
    with celery_app_for(env) as app:
        group = WorkerGroup(env, tmp_path_factory.mktemp("semantics"), cwd=ROOT)
        state = Deployment(Client(app), base_url, redis.Redis.from_url(env["REDIS_URL"]))
        try:
            group.worker(concurrency=2)
            group.worker(concurrency=2)
            group.program("webhooks", "-m", "flowcraft_celery.cli", "webhooks", "serve", "--port", str(port))
            group.wait_ready(90)
            wait_for(lambda: _answers(port), 60, "the webhook server")
            yield state
        finally:
            group.stop()
            for key in state.redis.scan_iter(f"{tag}:*"):
                state.redis.delete(key)


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_webhook_node_is_resumed_by_an_http_post_to_its_url(deployment: Deployment) -> None:
    run = deployment.client.start("sem-hook")
    assert run.wait(TIMEOUT)["status"] == "awaiting"
    url = str(deployment.client.result(run.run_id)["context"]["_webhooks.hook"])
    assert url.startswith(f"{deployment.base_url}/{run.run_id}/hook/0/")
    token = url.rsplit("/", 1)[-1]
    assert len(token) >= 40
    wrong = url[: -len(token)] + ("A" if token[0] != "A" else "B") + token[1:]
    assert post(f"{wrong}?action=paid", b'{"amount": 5}')[0] == 404
    status, answer = post(f"{url}?action=payed", b'{"amount": 5}')
    assert status == 400 and "'paid', 'refunded'" in answer["error"]
    assert post(f"{url}?action=paid", b'{"amount": NaN}')[0] == 400
    assert deployment.client.status(run.run_id)["status"] == "awaiting"
    assert post(f"{url}?action=paid", b'{"amount": 5}') == (202, {"runId": run.run_id, "resumed": "hook@0"})
    doc = run.wait(TIMEOUT)
    assert doc["status"] == "completed", doc.get("errors")
    context = deployment.client.result(run.run_id)["context"]
    assert context["_outputs.hook"] == {"url": url, "body": {"amount": 5}}
    assert deployment.calls(run.run_id) == {"paid": 1}
    assert post(f"{url}?action=paid", b'{"amount": 6}')[0] == 404  # a used token is refused


def test_a_webhook_in_a_child_run_resumes_the_parent_too(deployment: Deployment) -> None:
    run = deployment.client.start("sem-hook-parent")
    assert run.wait(TIMEOUT)["status"] == "awaiting"
    child_id = f"{run.run_id}.kid.0"
    url = str(deployment.client.result(child_id)["context"]["_webhooks.hook"])
    assert post(f"{url}?action=paid", b'{"order": 7}')[0] == 202
    assert deployment.client.status(run.run_id)["status"] != "awaiting"  # the parent no longer waits
    doc = run.wait(TIMEOUT)
    assert doc["status"] == "completed", doc.get("errors")
    assert deployment.client.result(run.run_id)["context"]["_outputs.kid"] == {"url": url, "body": {"order": 7}}
    assert deployment.calls(run.run_id) == {"after": 1}


def test_cancelling_a_parent_cancels_its_running_child(deployment: Deployment) -> None:
    run = deployment.client.start("sem-parent")
    child_id = f"{run.run_id}.kid.0"
    wait_for(lambda: deployment.calls(child_id).get("s1", 0) >= 1, TIMEOUT, "the child run's second node")
    assert deployment.client.status(child_id)["status"] == "running"
    assert deployment.client.cancel(run.run_id)
    parent, child = deployment.client.status(run.run_id), deployment.client.status(child_id)
    assert parent["status"] == "cancelled" and child["status"] == "cancelled"
    assert (parent.get("result") or {}).get("context", {}).get("_outputs.first") is None  # input was null
    assert "_outputs.first" in (parent.get("result") or {}).get("context", {})
    ran = sum(deployment.calls(child_id).values())
    time.sleep(3)  # nodes already running may finish; nothing new starts
    assert sum(deployment.calls(child_id).values()) <= ran + 1
    assert deployment.calls(child_id).get(f"s{semantics_nodes.CHILD_STEPS - 1}", 0) == 0
    assert "after" not in deployment.calls(run.run_id)


def test_each_attempt_of_a_subflow_node_starts_its_own_child_and_old_news_changes_nothing(
        deployment: Deployment) -> None:
    run = deployment.client.start("sem-retried")
    assert run.wait(TIMEOUT)["status"] == "awaiting"
    first, second = f"{run.run_id}.kid.0", f"{run.run_id}.kid.0.a2"
    deployment.client.resume(run.run_id, None, "not a number")  # child run 1 fails: attempt 2 starts child run 2
    wait_for(lambda: (deployment.client.runtime.statuses.get(second) or {}).get("status") == "awaiting", TIMEOUT,
             "the second attempt's child run awaiting")
    assert deployment.client.status(first)["status"] == "failed"
    assert run.wait(TIMEOUT)["status"] == "awaiting"
    rt = deployment.client.runtime
    notify_parent(deployment.client.app, rt, first)  # the news of child run 1 again (a redelivery, a reminder)
    time.sleep(3)
    assert rt.statuses.get(f"{run.run_id}.kid.0.a3") is None  # no third attempt started
    assert rt.ledger.pending(run.run_id)["kid@0"]["childRun"] == second
    assert deployment.client.status(run.run_id)["status"] == "awaiting"
    deployment.client.resume(run.run_id, None, 2)
    doc = run.wait(TIMEOUT)
    assert doc["status"] == "completed", doc.get("errors")
    assert deployment.client.result(run.run_id)["context"]["_outputs.kid"] == 102
    assert deployment.calls(first) == {"plus": 1} and deployment.calls(second) == {"plus": 1}
    entry = rt.timeline.entries(run.run_id)["kid@0"]  # the node's attempts show as any node's do
    assert (entry["uses"], entry["attempt"], entry["state"]) == ("subflow", 2, "succeeded")
    assert deployment.calls(run.run_id) == {"after": 1}


def test_after_redis_lost_the_parents_state_the_latest_attempts_child_is_the_one_resumed(
        deployment: Deployment) -> None:
    run = deployment.client.start("sem-retried")
    assert run.wait(TIMEOUT)["status"] == "awaiting"
    second = f"{run.run_id}.kid.0.a2"
    deployment.client.resume(run.run_id, None, "not a number")
    wait_for(lambda: (deployment.client.runtime.statuses.get(second) or {}).get("status") == "awaiting", TIMEOUT,
             "the second attempt's child run awaiting")
    assert run.wait(TIMEOUT)["status"] == "awaiting"
    rt = deployment.client.runtime
    assert rt.ledger.delete_run(run.run_id) > 0  # Redis loses the parent's ledger; the resume rebuilds it
    deployment.client.resume(run.run_id, None, 2)
    doc = run.wait(TIMEOUT)
    assert doc["status"] == "completed", doc.get("errors")
    assert deployment.client.result(run.run_id)["context"]["_outputs.kid"] == 102
    assert rt.statuses.get(f"{run.run_id}.kid.0.a3") is None
    assert deployment.calls(run.run_id) == {"after": 1}
