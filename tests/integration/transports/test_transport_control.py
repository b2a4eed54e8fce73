"""Celery's remote control at its default timeouts over azurequeue with Redis: real worker, Azurite, Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from azure.storage.queue import QueueServiceClient

from tests.integration.transports.transport_support import (
    APP,
    ROOT,
    Processes,
    child_env,
    client_app,
    processes,
    wait_for,
)
from transports.azurequeue.naming import azure_queue_name


@pytest.fixture
def procs(tmp_path: Path, unique_prefix: str) -> Iterator[Processes]:
    """Processes for this test, stopped at teardown."""
    with processes(tmp_path, unique_prefix) as started:
        yield started


def celery_cli(prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `celery -A <test app> <args>` at Celery's default timeouts."""
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, *args],
        cwd=ROOT, env=child_env(prefix), capture_output=True, text=True, timeout=60,
    )


def azure_queues(prefix: str) -> set[str]:
    """The Azure queues that exist under `prefix`."""
    service = QueueServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
    return {q.name for q in service.list_queues(name_starts_with=prefix.lower())}


def redis_queues(prefix: str) -> list[str]:
    """The transient queues (and their messages) left in Redis under `prefix`."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
    return [*client.scan_iter(f"azurequeue:{prefix}alive:*"), *client.scan_iter(f"azurequeue:{prefix}q:*")]


def test_worker_idle_40s_answers_ping_status_and_control_at_the_1s_default_and_30_of_30_pings(
    procs: Processes, unique_prefix: str
) -> None:
    procs.worker("idle")
    time.sleep(40)
    ping = celery_cli(unique_prefix, "inspect", "ping")
    assert "idle@" in ping.stdout, ping.stdout + ping.stderr
    status = celery_cli(unique_prefix, "status")
    assert "1 node online" in status.stdout, status.stdout + status.stderr
    grow = celery_cli(unique_prefix, "control", "pool_grow", "1")
    assert "pool will grow" in grow.stdout, grow.stdout + grow.stderr
    app = client_app(unique_prefix)
    replies = [app.control.inspect(timeout=1.0).ping() or {} for _ in range(30)]
    answered = sum(1 for reply in replies if any(name.startswith("idle@") for name in reply))
    assert answered == 30, f"{answered} of 30 pings got a reply"


def test_worker_stopped_while_a_flower_like_poller_runs_leaves_no_queue(
    procs: Processes, unique_prefix: str
) -> None:
    worker = procs.worker("leaving")
    app = client_app(unique_prefix)
    stop = threading.Event()
    seen: list[dict[str, object]] = []

    def poll() -> None:
        while not stop.is_set():
            inspect = app.control.inspect(timeout=0.5)
            seen.append(inspect.stats() or {})
            inspect.active()

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    wait_for(lambda: any(seen), 20)
    os.kill(worker.proc.pid, signal.SIGTERM)
    worker.proc.wait(30)
    time.sleep(5)
    stop.set()
    poller.join(10)
    app.close()
    assert azure_queues(unique_prefix) == {azure_queue_name("celery", unique_prefix)}
    assert redis_queues(unique_prefix) == []
