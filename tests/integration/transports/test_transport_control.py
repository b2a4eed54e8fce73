"""Celery's remote control at its default timeouts over azurequeue with Redis: real worker, Azurite, Redis.

The module's tests share one worker; the last test stops it.
"""

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

from tests.integration import names
from tests.integration.transports.transport_support import (
    APP,
    ROOT,
    Process,
    child_env,
    client_app,
    processes,
    wait_for,
)
from transports.azurequeue.naming import azure_queue_name

IDLE_SECONDS = 40


@pytest.fixture(scope="module")
def prefix() -> str:
    """The queue name prefix of this module's worker and clients."""
    return names.unique_name("control")


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory, services_env: dict[str, str],
           prefix: str) -> Iterator[tuple[Process, float]]:
    """The module's `celery worker -c 2` and when it was ready (monotonic); the last test stops it."""
    folder: Path = tmp_path_factory.mktemp("control")
    with processes(folder, prefix) as started:
        yield started.worker("idle"), time.monotonic()


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
    worker: tuple[Process, float], prefix: str
) -> None:
    _, ready = worker
    time.sleep(max(0.0, ready + IDLE_SECONDS - time.monotonic()))
    ping = celery_cli(prefix, "inspect", "ping")
    assert "idle@" in ping.stdout, f"no reply at the 1 s default after {IDLE_SECONDS} s idle:\n" + (
        ping.stdout + ping.stderr)
    status = celery_cli(prefix, "status")
    assert "1 node online" in status.stdout, status.stdout + status.stderr
    grow = celery_cli(prefix, "control", "pool_grow", "1")
    assert "pool will grow" in grow.stdout, grow.stdout + grow.stderr
    app = client_app(prefix)
    # one process, one reply queue reused call after call, as Flower does; limit=1 returns at the
    # first reply, which must come within Celery's default 1 s
    replies = [app.control.inspect(timeout=1.0, limit=1).ping() or {} for _ in range(30)]
    answered = sum(1 for reply in replies if any(name.startswith("idle@") for name in reply))
    app.close()
    assert answered == 30, f"{answered} of 30 pings got a reply within 1 s"


def test_worker_stopped_while_a_flower_like_poller_runs_leaves_no_queue(
    worker: tuple[Process, float], prefix: str
) -> None:
    process, _ = worker
    app = client_app(prefix)
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
    os.kill(process.proc.pid, signal.SIGTERM)
    process.proc.wait(30)
    time.sleep(5)
    stop.set()
    poller.join(10)
    app.close()
    left = azure_queues(prefix) - {azure_queue_name("celery", prefix)}
    assert not left, f"Azure queues left after the worker stopped: {sorted(left)}"
    assert redis_queues(prefix) == [], "transient queues left in Redis after the worker stopped"
