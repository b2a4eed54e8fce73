"""A tiny Celery app on the `azurequeue://` broker for the transport tests.

Each test isolates itself with `TRANSPORT_TEST_PREFIX` (the `queue_name_prefix`) and sets the
visibility timeout with `TRANSPORT_TEST_VISIBILITY`; `TRANSPORT_TEST_REDIS=0` runs the transport
without Redis (no wake-up signals, control and event queues on Azure). Tasks record what they do in Redis lists
so a test can count executions from outside the worker.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

import transports  # noqa: F401  (registers azurequeue://)
from transports.azurequeue.handback import HandBackUnstarted

app = Celery("transport_test_app", broker="azurequeue://")
app.conf.update(
    broker_transport_options={
        "queue_name_prefix": os.environ.get("TRANSPORT_TEST_PREFIX", "transport-test-"),
        "visibility_timeout": int(os.environ.get("TRANSPORT_TEST_VISIBILITY", "30")),
        "redis_url": (
            os.environ.get("REDIS_URL") if os.environ.get("TRANSPORT_TEST_REDIS", "1") == "1" else None
        ),
    },
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_send_sent_event=True,
)
app.steps["worker"].add(HandBackUnstarted)  # a warm shutdown hands unstarted messages back at once


def _redis() -> redis.Redis:
    """Connect to the Redis the test observes."""
    return redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


@app.task(name="transport_app.record")
def record(key: str, token: str) -> None:
    """Append `token` to the Redis list `key` (one entry per execution)."""
    _redis().rpush(key, token)


@app.task(name="transport_app.record_size")
def record_size(key: str, data: str) -> None:
    """Append the length of `data` to the Redis list `key`."""
    _redis().rpush(key, str(len(data)))


@app.task(name="transport_app.slow", acks_late=True)
def slow(key: str, seconds: float) -> None:
    """Record a start, work for `seconds`, record the end: an acks_late task."""
    client = _redis()
    client.rpush(key, f"start:{os.getpid()}")
    time.sleep(seconds)
    client.rpush(key, f"done:{os.getpid()}")


@app.task(name="transport_app.flaky", bind=True, max_retries=1)
def flaky(self: object, key: str, countdown: int) -> None:
    """Record each attempt; fail the first one and retry it after `countdown` seconds."""
    client = _redis()
    attempt = client.rpush(key, str(time.time()))
    if attempt == 1:
        raise self.retry(countdown=countdown)  # type: ignore[attr-defined]


@app.task(name="transport_app.tagged", acks_late=True)
def tagged(key: str, tag: str, seconds: float) -> None:
    """Record `start:<tag>`, work for `seconds`, record `done:<tag>`: an acks_late task."""
    client = _redis()
    client.rpush(key, f"start:{tag}")
    time.sleep(seconds)
    client.rpush(key, f"done:{tag}")
