"""Loaded into test workers (FLOWCRAFT_NODE_MODULES): counts in a Redis hash, per queue, the node
tasks the worker ran, so a test can see which shard queues really carried messages."""

from __future__ import annotations

import os
from typing import Any

import redis
from celery.signals import task_prerun

#: The Redis hash the counts go to (queue name -> node tasks run from it).
KEY_VARIABLE = "FLOWCRAFT_TEST_SHARD_TAP"


@task_prerun.connect
def _count_queue(task: Any = None, **_: Any) -> None:
    key = os.environ.get(KEY_VARIABLE)
    if not key or task is None or not str(task.name).startswith("flowcraft.node."):
        return
    info = getattr(task.request, "delivery_info", None) or {}
    queue = str(info.get("routing_key") or "?")
    redis.Redis.from_url(os.environ["REDIS_URL"]).hincrby(key, queue, 1)
