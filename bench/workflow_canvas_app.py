"""The plain-Celery side of the workflow benchmark: one no-op task on a Redis broker and backend.

Configured from BENCH_CANVAS_REDIS (broker and result backend URL) and BENCH_CANVAS_QUEUE; the
benchmark builds chains and chords of `wfb.noop` with the same shapes as its workflow graphs.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery

_url = os.environ.get("BENCH_CANVAS_REDIS", "redis://127.0.0.1:6379/1")
app = Celery("wfb_canvas", broker=_url, backend=_url)
app.conf.update(task_default_queue=os.environ.get("BENCH_CANVAS_QUEUE", "wfb-canvas"),
                worker_hijack_root_logger=False, broker_connection_retry_on_startup=True,
                result_expires=3600)


@app.task(name="wfb.noop")
def noop(value: Any = None) -> Any:
    """Do nothing: return the input (a chord callback gets the list of branch outputs)."""
    return value


@app.task(name="wfb.sleep")
def sleep(value: Any = None) -> Any:
    """Sleep BENCH_LONG_SECONDS (a long task), then return the input."""
    time.sleep(float(os.environ.get("BENCH_LONG_SECONDS", "3")))
    return value


@app.task(name="wfb.stamp")
def stamp(key: str) -> None:
    """Record when a worker started this task (the canvas side of the idle pick-up figure)."""
    redis.Redis.from_url(_url).rpush(key, repr(time.time()))
