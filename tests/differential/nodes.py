"""The `diff-behave` node for Celery workers (FLOWCRAFT_NODE_MODULES=tests.differential.nodes).

Each invocation is counted in the Redis hash of its case (`harness.hits_key`), shared by every
worker process, then the behaviour in the node's params runs (SPEC §10 vocabulary).
"""

from __future__ import annotations

import os

import redis

from flowcraft_celery.engine.registry import default_registry
from tests.differential.generator import BEHAVE
from tests.differential.harness import behave, hits_key

_client: redis.Redis | None = None
_pid = 0


def _redis() -> redis.Redis:
    """This process's connection (a forked pool child opens its own)."""
    global _client, _pid
    if _client is None or _pid != os.getpid():
        _client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        _pid = os.getpid()
    return _client


def _hit(case: str, entry: str) -> None:
    _redis().hincrby(hits_key(case), entry, 1)


default_registry.register(BEHAVE, behave(_hit))
