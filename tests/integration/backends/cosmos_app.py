"""A tiny Celery app for the Cosmos backend tests: Redis broker, `cosmos://` results.

The worker test sets `FLOWCRAFT_TEST_QUEUE` and `FLOWCRAFT_TEST_COSMOS_DATABASE` so each test
has its own queue and results database.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

app = Celery("cosmos_test_app", broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    result_backend="cosmos://",
    cosmos_database=os.environ.get("FLOWCRAFT_TEST_COSMOS_DATABASE", "flowcraft-test"),
    task_default_queue=os.environ.get("FLOWCRAFT_TEST_QUEUE", "cosmos-test"),
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="cosmos_app.add")
def add(x: int, y: int) -> int:
    """x + y."""
    return x + y


@app.task(name="cosmos_app.fail")
def fail(message: str) -> None:
    """Raise ValueError(message)."""
    raise ValueError(message)


@app.task(name="cosmos_app.count_and_sum")
def count_and_sum(values: list[int], counter_key: str) -> int:
    """Chord callback: count this execution in Redis, then sum the header's results."""
    redis.Redis.from_url(os.environ["REDIS_URL"]).incr(counter_key)
    return sum(values)


@app.task(name="cosmos_app.collect")
def collect(values: list[object]) -> list[object]:
    """Chord callback: the header's results as they arrive."""
    return values
