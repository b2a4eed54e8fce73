"""A busy worker at Celery's defaults (prefetch multiplier 4, prefork): real worker, Azurite, Redis."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.integration.transports.transport_support import (
    Processes,
    client_app,
    processes,
    wait_for,
)


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


def test_8_tasks_of_15s_with_10s_visibility_on_a_c2_worker_run_8_times(
    procs: Processes, rdb: redis.Redis, unique_prefix: str
) -> None:
    worker = procs.worker("busy", 10)
    app = client_app(unique_prefix, visibility=10)
    key = f"{unique_prefix}:busy"
    for i in range(8):
        app.send_task("transport_app.tagged", args=[key, str(i), 15])
    wait_for(lambda: sum(e.startswith("done") for e in rdb.lrange(key, 0, -1)) >= 8, 120, 1)
    time.sleep(12)
    starts = Counter(e.split(":")[1] for e in rdb.lrange(key, 0, -1) if e.startswith("start"))
    assert starts == Counter({str(i): 1 for i in range(8)}), worker.text()[-3000:]
