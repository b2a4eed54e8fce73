"""The Celery bridge end to end: real workers over Azurite, the Cosmos emulator and Redis."""

from __future__ import annotations

import importlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from azure.storage.queue import QueueClient

from flowcraft_celery.client import Client
from flowcraft_celery.workers import WorkerGroup
from tests.integration import bridge_nodes, names
from transports.azurequeue_naming import azure_queue_name

ROOT = Path(__file__).resolve().parents[2]
NODES = "tests.integration.bridge_nodes"
WORKER_BLUEPRINTS = f"{NODES}:blueprints"
CLIENT_BLUEPRINTS = f"{WORKER_BLUEPRINTS},{NODES}:client_blueprints"
RUN_TIMEOUT = 240.0


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

    def stop_shared(self) -> None:
        """Stop the shared workers so a test owns every process on the queue."""
        if self.shared is not None:
            self.shared.stop()
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
    saved = {name: os.environ.get(name) for name in client_env}
    os.environ.update(client_env)
    import celeryconfig

    from flowcraft_celery.app import create_app

    importlib.reload(celeryconfig)
    state = Bridge(Client(create_app()), env, tmp_path_factory.mktemp("bridge"),
                   redis.Redis.from_url(env["REDIS_URL"]))
    try:
        yield state
    finally:
        for group in state.groups:
            group.stop()
        for key in state.redis.scan_iter(f"{tag}:*"):
            state.redis.delete(key)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        importlib.reload(celeryconfig)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll until `condition` holds (AssertionError naming `what` otherwise)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


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
