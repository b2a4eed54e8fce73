"""A busy worker at Celery's defaults (prefetch multiplier 4, prefork): real worker, Azurite, Redis.

The module's tests share one `-c 2` worker with a 10 s visibility timeout; the warm-shutdown test
stops it, so it comes last.
"""

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

VISIBILITY = 10


@pytest.fixture(scope="module")
def prefix() -> str:
    """The queue name prefix of this module's worker and clients."""
    return names.unique_name("busy-worker")


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory, services_env: dict[str, str], prefix: str) -> Iterator[Process]:
    """One `celery worker -c 2` at the default prefetch, visibility 10 s, stopped at the end."""
    folder: Path = tmp_path_factory.mktemp("busy-worker")
    with processes(folder, prefix) as started:
        yield started.worker("busy", VISIBILITY)


@pytest.fixture(scope="module")
def rdb(prefix: str) -> Iterator[redis.Redis]:
    """Redis, with this module's keys deleted afterwards."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
    yield client
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


def test_8_tasks_of_15s_with_10s_visibility_on_a_c2_worker_run_8_times_and_it_answers_ping_at_1s(
    worker: Process, rdb: redis.Redis, prefix: str
) -> None:
    app = client_app(prefix, visibility=VISIBILITY)
    key = f"{prefix}:busy"
    for i in range(8):
        app.send_task("transport_app.tagged", args=[key, str(i), 15])
    wait_for(lambda: len(rdb.lrange(key, 0, -1)) >= 2, 30)
    for attempt in range(2):  # both pool processes busy, 6 messages prefetched: at 0 s and 12 s
        started = time.monotonic()
        ping = subprocess.run(
            [sys.executable, "-m", "celery", "-A", APP, "inspect", "ping"],  # Celery's default timeout: 1 s
            cwd=ROOT, env=child_env(prefix, VISIBILITY), capture_output=True, text=True, timeout=60,
        )
        took = time.monotonic() - started
        assert "busy@" in ping.stdout, f"busy worker did not answer ping {attempt + 1} at the 1 s default:\n" + (
            ping.stdout + ping.stderr)
        assert took < 15, f"inspect ping {attempt + 1} took {took:.1f} s"
        time.sleep(12)
    wait_for(lambda: sum(e.startswith("done") for e in rdb.lrange(key, 0, -1)) >= 8, 120, interval=1)
    time.sleep(VISIBILITY + 2)  # a message whose hold was lost would reappear and run again by now
    starts = Counter(e.split(":")[1] for e in rdb.lrange(key, 0, -1) if e.startswith("start"))
    assert starts == Counter({str(i): 1 for i in range(8)}), (
        f"8 tasks ran {sum(starts.values())} times: {dict(starts)}\n{worker.text()[-3000:]}")
    lost = [line for line in worker.text().splitlines()
            if any(sign in line for sign in ("Lost hold", "came too late", "already redelivered", "PopReceipt"))]
    assert not lost, "\n".join(lost)


def test_warm_shutdown_hands_4_unstarted_messages_back_at_once_and_exits_after_the_2_running(
    worker: Process, rdb: redis.Redis, prefix: str
) -> None:
    app = client_app(prefix, visibility=VISIBILITY)
    key = f"{prefix}:leaving"
    for i in range(6):
        app.send_task("transport_app.tagged", args=[key, str(i), 8])
    wait_for(lambda: len(rdb.lrange(key, 0, -1)) >= 2, 30)
    time.sleep(1)
    stopped = time.monotonic()
    os.kill(worker.proc.pid, signal.SIGTERM)  # the main process only, as systemd or Kubernetes do
    azure = QueueServiceClient.from_connection_string(
        os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    ).get_queue_client(azure_queue_name("celery", prefix))
    visible = wait_for(lambda: len(azure.peek_messages(max_messages=32)) >= 4 and azure, 5, interval=0.2)
    handed_back = time.monotonic() - stopped
    worker.proc.wait(30)
    exited = time.monotonic() - stopped
    entries = rdb.lrange(key, 0, -1)
    assert sorted(e.split(":")[0] for e in entries) == ["done", "done", "start", "start"], entries
    assert exited < 15, f"warm shutdown took {exited:.1f} s for 2 running tasks of 8 s"
    assert len(visible.peek_messages(max_messages=32)) == 4, "not the 4 unstarted messages visible again"
    print(f"4 unstarted messages visible {handed_back:.1f} s after SIGTERM; exited after {exited:.1f} s")
