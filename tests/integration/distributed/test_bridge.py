"""The Celery bridge end to end: real workers over Azurite, the Cosmos emulator and Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

from flowcraft_celery.devtools.workers import WorkerGroup
from flowcraft_celery.distributed.client import Client
from flowcraft_celery.distributed.core.message import NodeMessage
from flowcraft_celery.distributed.runs.publishing import publish
from flowcraft_celery.model.graph import Graph
from tests.integration import names
from tests.integration.celery_settings import celery_app_for
from tests.integration.distributed import bridge_nodes
from tests.integration.polling import wait_for
from transports.azurequeue.naming import azure_queue_name, dead_letter_queue_name

ROOT = Path(__file__).resolve().parents[3]
NODES = "tests.integration.distributed.bridge_nodes"
WORKER_BLUEPRINTS = f"{NODES}:blueprints"
CLIENT_BLUEPRINTS = f"{WORKER_BLUEPRINTS},{NODES}:client_blueprints"
RUN_TIMEOUT = 240.0
#: Redelivery after the 5 s visibility timeout, then the 5 s node: well under a minute.
KILL_TIMEOUT = 60.0


@dataclass
class Bridge:
    """The module's client, the workers' environment, and the shared worker group."""

    client: Client
    env: dict[str, str]
    log_dir: Path
    redis: redis.Redis
    groups: list[WorkerGroup] = field(default_factory=list)
    shared: WorkerGroup | None = None

    def group(self, **overrides: str) -> WorkerGroup:
        """A new worker group (stopped at module teardown at the latest)."""
        group = WorkerGroup({**self.env, **overrides}, self.log_dir / f"group{len(self.groups)}", cwd=ROOT)
        self.groups.append(group)
        return group

    def shared_workers(self) -> WorkerGroup:
        """Two worker processes (concurrency 2 each), started on first use."""
        if self.shared is None:
            self.shared = self.group()
            self.shared.worker(concurrency=2)
            self.shared.worker(concurrency=2)
            self.shared.wait_ready(90)
        return self.shared

    def stop_all(self) -> None:
        """Stop every worker and beat so far, so a test owns every process on the queue."""
        for group in self.groups:
            group.stop()
        self.shared = None

    def calls(self, run_id: str) -> dict[str, int]:
        """How often each node of the run was invoked, over every worker."""
        raw: dict[bytes, bytes] = self.redis.hgetall(bridge_nodes.calls_key(run_id))  # type: ignore[assignment]
        return {k.decode(): int(v) for k, v in raw.items()}

    def outputs(self, run_id: str) -> dict[str, Any]:
        """The run's context."""
        return self.client.runtime.contexts.snapshot(run_id)


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory, services_env: dict[str, str]) -> Iterator[Bridge]:
    """Unique queue, key prefix and database for this module; an app configured for them."""
    tag = names.unique_name("bridge")
    env = {**services_env, "FLOWCRAFT_DEFAULT_QUEUE": tag, "FLOWCRAFT_KEY_PREFIX": f"{tag}:",
           "FLOWCRAFT_COSMOS_DATABASE": tag, "FLOWCRAFT_NODE_MODULES": NODES,
           "FLOWCRAFT_BLUEPRINTS": WORKER_BLUEPRINTS, "FLOWCRAFT_TASK_EVENTS": "false"}
    client_env = {**env, "FLOWCRAFT_BLUEPRINTS": CLIENT_BLUEPRINTS}
    with celery_app_for(client_env) as app:
        state = Bridge(Client(app), env, tmp_path_factory.mktemp("bridge"), redis.Redis.from_url(env["REDIS_URL"]))
        try:
            yield state
        finally:
            for group in state.groups:
                group.stop()
            for key in state.redis.scan_iter(f"{tag}:*"):
                state.redis.delete(key)


def test_fan_out_of_200_joins_with_every_node_run_once(bridge: Bridge) -> None:
    bridge.shared_workers()
    run = bridge.client.start("bt-fan")
    doc = run.wait(RUN_TIMEOUT)
    assert doc["status"] == "completed", doc.get("errors")
    calls = bridge.calls(run.run_id)
    width = bridge_nodes.FAN_WIDTH
    assert calls == {"start": 1, "join": 1, **{f"p{i}": 1 for i in range(width)}}
    context = bridge.outputs(run.run_id)
    assert {k for k in context if k.startswith("part.")} == {f"part.p{i}" for i in range(width)}
    assert context["_outputs.join"] == width


def test_long_nodes_of_a_fan_out_spread_over_both_idle_workers(bridge: Bridge) -> None:
    """5 long nodes started together on 2 idle workers of 2 processes each: both workers run
    some (at most 3 on one, as 2 waves need), none waits in a busy worker while the other idles."""
    workers = bridge.shared_workers()
    time.sleep(2)  # both idle
    run = bridge.client.start("bt-long-fan")
    doc = run.wait(RUN_TIMEOUT)
    assert doc["status"] == "completed", doc.get("errors")
    raw: dict[bytes, bytes] = bridge.redis.hgetall(bridge_nodes.workers_key(run.run_id))  # type: ignore[assignment]
    ran = Counter(int(pid) for pid in raw.values())
    assert sum(ran.values()) == bridge_nodes.LONG_WIDTH
    assert set(ran) == {process.pid for process in workers.processes}, ran
    assert max(ran.values()) <= 3, f"one worker ran {max(ran.values())} of {bridge_nodes.LONG_WIDTH}: {ran}"


def test_duplicate_node_message_runs_the_node_once(bridge: Bridge) -> None:
    bridge.shared_workers()
    run = bridge.client.start("bt-dup")
    wait_for(lambda: bridge.calls(run.run_id).get("c0") == 1, 60, "c0 to start")
    graph = Graph(bridge.client.runtime.blueprints["bt-dup"])
    pending = bridge.client.runtime.ledger.pending(run.run_id)
    assert list(pending) == ["c0@0"]
    for _ in range(2):
        publish(bridge.client.app, graph, NodeMessage.from_wire(pending["c0@0"]))
    doc = run.wait(RUN_TIMEOUT)
    assert doc["status"] == "completed", doc.get("errors")
    completed_at = doc["lastUpdated"]
    publish(bridge.client.app, graph, NodeMessage.from_wire(pending["c0@0"]))
    wait_for(lambda: queue_length(bridge) == 0, 60, "the duplicates to be consumed")
    time.sleep(3)
    assert bridge.calls(run.run_id) == {"c0": 1, "c1": 1}
    assert bridge.client.progress(run.run_id) == 2
    final = bridge.client.status(run.run_id)
    assert final["status"] == "completed"
    assert final["lastUpdated"] == completed_at


def test_cancel_stops_the_run_before_its_next_node(bridge: Bridge) -> None:
    bridge.shared_workers()
    run = bridge.client.start("bt-cancel")
    wait_for(lambda: "c1" in bridge.calls(run.run_id), 60, "c1 to start")
    assert bridge.client.cancel(run.run_id) is True
    assert bridge.client.status(run.run_id)["status"] == "cancelled"
    wait_for(lambda: queue_length(bridge) == 0, 60, "the next node's message to be consumed")
    time.sleep(4)
    assert bridge.calls(run.run_id) == {"c0": 1, "c1": 1}
    context = bridge.outputs(run.run_id)
    assert not any(f"_outputs.c{i}" in context for i in range(2, bridge_nodes.CHAIN_LENGTH))
    assert bridge.client.status(run.run_id)["status"] == "cancelled"
    assert bridge.client.cancel(run.run_id) is False


def test_awaiting_run_resumes_through_the_cli(bridge: Bridge) -> None:
    bridge.shared_workers()
    run = bridge.client.start("bt-approval")
    doc = run.wait(RUN_TIMEOUT)
    assert doc["status"] == "awaiting"
    assert doc["awaiting"] == ["gate@0"]
    cli = subprocess.run([str(ROOT / ".venv" / "bin" / "flowcraft-celery"), "resume", run.run_id, "approve",
                          "--output", '{"by":"me"}'], cwd=ROOT, env=dict(os.environ), capture_output=True,
                         text=True, timeout=120, check=False)
    assert cli.returncode == 0, cli.stderr
    assert "gate@0" in cli.stdout
    doc = run.wait(RUN_TIMEOUT)
    assert doc["status"] == "completed", doc.get("errors")
    assert bridge.calls(run.run_id) == {"approved": 1}
    context = bridge.outputs(run.run_id)
    assert context["_outputs.gate"] == {"by": "me"}
    assert context["_outputs.approved"] == {"by": "me"}


def test_a_wait_in_nested_loops_is_shown_and_resumed_by_its_passes(bridge: Bridge) -> None:
    bridge.shared_workers()
    run = bridge.client.start("bt-nested-wait")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "flowcraft_celery.cli", *args], cwd=ROOT, env=dict(os.environ),
                              capture_output=True, text=True, timeout=120, check=False)

    def awaiting() -> list[str]:
        doc = run.wait(RUN_TIMEOUT)
        assert doc["status"] == "awaiting", doc.get("errors")
        return list(doc["awaiting"])

    assert awaiting() == ["ask@0"]  # passes (0, 0)
    status = cli("status", run.run_id)
    assert status.returncode == 0 and "ask (iteration 0.0)" in status.stdout, status.stderr
    resumed = cli("resume", run.run_id, "--node", "ask@0.0", "--output", '"first"')
    assert resumed.returncode == 0 and resumed.stdout.strip() == f"resumed {run.run_id} at ask@0.0", resumed.stderr
    assert awaiting() == ["ask@1"]  # passes (0, 1), given as the iteration number
    assert bridge.client.resume(run.run_id, None, "second", "ask@1") == "ask@1"
    assert awaiting() == ["ask@1000000"]  # passes (1, 0)
    assert "ask (iteration 1.0)" in cli("status", run.run_id).stdout
    shown = cli("show", run.run_id, "--node", "ask@1.0")
    assert shown.returncode == 0, shown.stderr
    assert [line.split()[:3] for line in shown.stdout.splitlines()[4:]] == [["ask", "1.0", "awaiting"]]
    refused = cli("resume", run.run_id, "--node", "ask@1.x")
    assert refused.returncode == 1 and "'1.x'" in refused.stderr and "neither passes" in refused.stderr
    assert cli("resume", run.run_id, "--node", "ask@1000000", "--output", '"third"').returncode == 0
    assert awaiting() == ["ask@1000001"]
    assert cli("resume", run.run_id, "--node", "ask@1.1", "--output", '"fourth"').returncode == 0
    doc = run.wait(RUN_TIMEOUT)
    assert doc["status"] == "completed", doc.get("errors")
    listed = cli("show", run.run_id, "--node", "ask")
    assert [line.split()[:3] for line in listed.stdout.splitlines()[4:]] == [
        ["ask", it, "succeeded"] for it in ("0.0", "0.1", "1.0", "1.1")]
    assert bridge.calls(run.run_id) == {"init": 1, "obody": 2, "zi": 2, "ibody": 4, "done": 1}
    assert bridge.outputs(run.run_id)["_outputs.ask"] == "fourth"


def test_blueprint_unknown_to_workers_fails_the_run_naming_it(bridge: Bridge) -> None:
    bridge.shared_workers()
    run = bridge.client.start("bt-client-only")
    doc = run.wait(RUN_TIMEOUT)
    assert doc["status"] == "failed"
    messages = [str(e.get("message")) for e in doc.get("errors") or []]
    assert any("'bt-client-only'" in m and "not known to worker" in m for m in messages), messages
    assert bridge.calls(run.run_id) == {}


def queue_length(bridge: Bridge) -> int:
    """Messages (visible or not) left on the module's Azure queue."""
    return int(azure_queue(bridge).get_queue_properties().approximate_message_count or 0)


def azure_queue(bridge: Bridge) -> QueueClient:
    """The Azure queue the transport uses for the module's default Celery queue."""
    name = azure_queue_name(bridge.env["FLOWCRAFT_DEFAULT_QUEUE"], os.environ.get("FLOWCRAFT_QUEUE_PREFIX", ""))
    return QueueClient.from_connection_string(bridge.env["AZURE_STORAGE_CONNECTION_STRING"], name)


def test_killed_worker_run_completes_on_another_worker(bridge: Bridge) -> None:
    bridge.stop_all()
    group = bridge.group(FLOWCRAFT_VISIBILITY_TIMEOUT="5")
    first = group.worker(concurrency=1)
    group.wait_ready(90)
    run = bridge.client.start("bt-kill")
    wait_for(lambda: "c1" in bridge.calls(run.run_id), 60, "the slow node to start")
    group.kill(first)
    group.worker(concurrency=1)
    group.wait_ready(90)
    doc = run.wait(KILL_TIMEOUT)
    assert doc["status"] == "completed", doc.get("errors")
    calls = bridge.calls(run.run_id)
    assert calls["c0"] == 1
    assert calls["c1"] in (1, 2)
    assert calls["c2"] == 1
    assert bridge.client.progress(run.run_id) == 3
    assert bridge.outputs(run.run_id)["_outputs.c2"] == "c0"


def test_reconcile_completes_a_run_whose_messages_were_lost(bridge: Bridge) -> None:
    bridge.stop_all()
    stopped = bridge.group()
    stopped.worker(concurrency=1)
    stopped.wait_ready(90)
    run = bridge.client.start("bt-stall")
    ledger = bridge.client.runtime.ledger
    wait_for(lambda: "wakeAt" in ledger.pending(run.run_id).get("nap@0", {}), 60, "the sleep node's wake-up message")
    stopped.stop()
    azure_queue(bridge).clear_messages()
    assert queue_length(bridge) == 0
    assert bridge.client.status(run.run_id)["status"] == "running"
    assert bridge.client.runtime.ledger.pending(run.run_id)
    recovering = bridge.group(FLOWCRAFT_STALL_SECONDS="3", FLOWCRAFT_RECONCILE_INTERVAL="2")
    recovering.worker(concurrency=1)
    recovering.beat()
    recovering.wait_ready(90)
    doc = run.wait(RUN_TIMEOUT)
    assert doc["status"] == "completed", doc.get("errors")
    calls = bridge.calls(run.run_id)
    assert calls == {"c0": 1, "c2": 1}
    assert bridge.client.progress(run.run_id) == 3


def test_node_queue_routes_it_to_the_workers_of_that_queue(bridge: Bridge) -> None:
    bridge.stop_all()
    default_only = bridge.group()
    default_only.worker(concurrency=1)
    default_only.wait_ready(90)
    run = bridge.client.start("bt-routed")
    wait_for(lambda: bridge.calls(run.run_id).get("a") == 1, 60, "the first node")
    time.sleep(5)
    assert "heavy" not in bridge.calls(run.run_id)
    assert bridge.client.status(run.run_id)["status"] == "running"
    heavy = bridge.group()
    heavy.worker(queues=bridge_nodes.heavy_queue(), concurrency=1)
    heavy.wait_ready(90)
    doc = run.wait(RUN_TIMEOUT)
    assert doc["status"] == "completed", doc.get("errors")
    assert bridge.calls(run.run_id) == {"a": 1, "heavy": 1, "b": 1}


def test_a_worker_with_another_blueprint_version_never_continues_the_run(bridge: Bridge) -> None:
    bridge.stop_all()
    # started on version 1 and the unedited copy; a rolling deploy then replaces the workers
    run = bridge.client.start("bt-versioned")
    edited = bridge.client.start("bt-unversioned")
    other_version = bridge.group(BT_VERSION="2", BT_EDIT="edited")  # same ids: version 2, an edited copy
    other_version.worker(concurrency=1)
    other_version.wait_ready(90)
    doc = run.wait(RUN_TIMEOUT)
    assert doc["status"] == "failed"
    message = doc["errors"][0]["message"]
    assert "version mismatch" in message and "'1'" in message and "'2'" in message
    assert bridge.calls(run.run_id) == {}
    doc = edited.wait(RUN_TIMEOUT)
    assert doc["status"] == "failed"
    message = doc["errors"][0]["message"]
    assert "version mismatch" in message and "sha256:" in message and "edited" in message
    assert bridge.calls(edited.run_id) == {}


def test_a_garbage_node_message_goes_to_the_dead_letter_queue_and_workers_keep_going(bridge: Bridge) -> None:
    bridge.shared_workers()
    queue = bridge.env["FLOWCRAFT_DEFAULT_QUEUE"]
    bridge.client.app.send_task("flowcraft.node.bt-step", kwargs={"msg": {"not": "a node message"}}, queue=queue)
    dlq = QueueClient.from_connection_string(
        bridge.env["AZURE_STORAGE_CONNECTION_STRING"],
        azure_queue_name(dead_letter_queue_name(queue), os.environ.get("FLOWCRAFT_QUEUE_PREFIX", "")))

    def dead_lettered() -> bool:
        try:
            return int(dlq.get_queue_properties().approximate_message_count or 0) >= 1
        except ResourceNotFoundError:
            return False

    wait_for(dead_lettered, 90, "the garbage message in the dead-letter queue")
    run = bridge.client.start("bt-dup")
    assert run.wait(RUN_TIMEOUT)["status"] == "completed"


def test_a_final_context_too_large_for_the_status_item_stays_readable(bridge: Bridge) -> None:
    bridge.shared_workers()
    run = bridge.client.start("bt-big")
    doc = run.wait(RUN_TIMEOUT)
    assert doc["status"] == "completed", doc.get("errors")
    assert doc["result"]["context"] is None and doc["result"]["contextInStore"] is True
    result = bridge.client.result(run.run_id)
    assert result["status"] == "completed"
    assert [len(result["context"][f"big.{i}"]) for i in range(3)] == [250_000] * 3
    assert result["context"]["_outputs.write"] == 3
