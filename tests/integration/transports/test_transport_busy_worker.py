"""A busy worker at Celery's defaults (prefetch multiplier 4, prefork): real worker, Azurite, Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
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


@pytest.fixture
def rdb(unique_prefix: str) -> Iterator[redis.Redis]:
    """Redis, with this test's keys deleted afterwards."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
    yield client
    for key in client.scan_iter(f"{unique_prefix}*"):
        client.delete(key)


def test_8_tasks_of_15s_with_10s_visibility_on_a_c2_worker_run_8_times_and_it_answers_ping_at_1s(
    procs: Processes, rdb: redis.Redis, unique_prefix: str
) -> None:
    worker = procs.worker("busy", 10)
    app = client_app(unique_prefix, visibility=10)
    key = f"{unique_prefix}:busy"
    for i in range(8):
        app.send_task("transport_app.tagged", args=[key, str(i), 15])
    wait_for(lambda: len(rdb.lrange(key, 0, -1)) >= 2, 30)
    for _ in range(2):
        started = time.monotonic()
        ping = subprocess.run(
            [sys.executable, "-m", "celery", "-A", APP, "inspect", "ping"],
            cwd=ROOT, env=child_env(unique_prefix, 10), capture_output=True, text=True, timeout=60,
        )
        assert "busy@" in ping.stdout, ping.stdout + ping.stderr
        assert time.monotonic() - started < 20
        time.sleep(12)
    wait_for(lambda: sum(e.startswith("done") for e in rdb.lrange(key, 0, -1)) >= 8, 120, 1)
    time.sleep(12)
    starts = Counter(e.split(":")[1] for e in rdb.lrange(key, 0, -1) if e.startswith("start"))
    assert starts == Counter({str(i): 1 for i in range(8)}), worker.text()[-3000:]


def test_warm_shutdown_hands_4_unstarted_messages_back_at_once_and_exits_after_the_2_running(
    procs: Processes, rdb: redis.Redis, unique_prefix: str
) -> None:
    worker = procs.worker("leaving")
    app = client_app(unique_prefix)
    key = f"{unique_prefix}:leaving"
    for i in range(6):
        app.send_task("transport_app.tagged", args=[key, str(i), 8])
    wait_for(lambda: len(rdb.lrange(key, 0, -1)) >= 2, 30)
    time.sleep(1)
    stopped = time.monotonic()
    os.kill(worker.proc.pid, signal.SIGTERM)  # the main process only, as systemd or Kubernetes do
    azure = QueueServiceClient.from_connection_string(
        os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    ).get_queue_client(azure_queue_name("celery", unique_prefix))
    visible = wait_for(lambda: len(azure.peek_messages(max_messages=32)) >= 4 and azure, 5, 0.2)
    worker.proc.wait(30)
    exited = time.monotonic() - stopped
    entries = rdb.lrange(key, 0, -1)
    assert sorted(e.split(":")[0] for e in entries) == ["done", "done", "start", "start"], entries
    assert exited < 15, f"warm shutdown took {exited:.1f} s for 2 running tasks of 8 s"
    assert len(visible.peek_messages(max_messages=32)) == 4
