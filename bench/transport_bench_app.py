"""The Celery app the transport benchmark runs workers of: one no-op task, any broker.

Configured from the environment by `bench/transport_bench.py`: BENCH_BROKER_URL, BENCH_QUEUE,
BENCH_PREFIX (azurequeue's queue_name_prefix), BENCH_COUNTER (Redis key counting executions)
and BENCH_STATS_FILE (where the worker writes its azurequeue request counters twice a second).
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_ready

import transports  # noqa: F401  (registers azurequeue://)
from flowcraft_celery.settings import DEFAULT_REDIS_URL
from transports.azurequeue.stats import STATS

app = Celery("transport_bench", broker=os.environ.get("BENCH_BROKER_URL", "azurequeue://"))
app.conf.update(
    task_default_queue=os.environ.get("BENCH_QUEUE", "bench"),
    broker_transport_options={"queue_name_prefix": os.environ.get("BENCH_PREFIX", "bench-")},
    worker_prefetch_multiplier=int(os.environ.get("BENCH_PREFETCH_MULTIPLIER", "16")),
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
_counter = redis.Redis.from_url(os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL)


@app.task(name="bench.noop")
def noop() -> None:
    """Do nothing but count the execution, so the benchmark knows when all are done."""
    _counter.incr(os.environ.get("BENCH_COUNTER", "bench:count"))


def _write_stats_forever(path: str) -> None:
    """Write this process's request counters to `path` every half second."""
    stop = threading.Event()
    while not stop.wait(0.5):
        tmp = f"{path}.tmp"
        with open(tmp, "w") as out:
            json.dump(STATS.snapshot(), out)
        os.replace(tmp, path)


@worker_ready.connect
def _start_stats_writer(**_: Any) -> None:
    """Publish the worker's request counters for the benchmark to read."""
    path = os.environ.get("BENCH_STATS_FILE")
    if path:
        threading.Thread(target=_write_stats_forever, args=(path,), daemon=True).start()
