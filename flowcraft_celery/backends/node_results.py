"""Celery results of node tasks, kept in Redis instead of Cosmos DB.

A node task's result is small (its run and the nodes it handled, see
`flowcraft_celery.distributed.core.logcontext.task_summary`) and there is one per task: in Redis it
costs one SET with the result expiry and no Cosmos request, so the Cosmos requests per node of
bench/ stay where they are. `CosmosBackend` writes the results of `flowcraft.node.*` tasks here
and reads here when Cosmos has no result for a task id, so `celery result <id>` and Flower's
result API answer for node tasks at once instead of waiting for a result that never comes.
"""

from __future__ import annotations

import os
from typing import Any

import redis

from transports.azurequeue import redis_from_url

NODE_TASK_PREFIX = "flowcraft.node."


def is_node_task(request: Any) -> bool:
    """Whether a Celery task request (or task name) is a workflow node's task."""
    name = request if isinstance(request, str) else getattr(request, "task", None)
    return isinstance(name, str) and name.startswith(NODE_TASK_PREFIX)


class NodeResults:
    """Encoded result metas of node tasks under `<flowcraft_key_prefix>result:<celery key>`."""

    def __init__(self, url: str, prefix: str, expires: float | None) -> None:
        self._url = url
        self._prefix = prefix
        self._expires = int(expires) if expires and expires > 0 else None
        self._client: tuple[int, redis.Redis] | None = None

    @property
    def client(self) -> redis.Redis:
        """This process's Redis client (a forked child builds its own)."""
        if self._client is None or self._client[0] != os.getpid():
            self._client = (os.getpid(), redis_from_url(self._url))
        return self._client[1]

    def key(self, celery_key: Any) -> str:
        """The Redis key holding one result."""
        text = celery_key.decode() if isinstance(celery_key, bytes) else str(celery_key)
        return f"{self._prefix}result:{text}"

    def set(self, celery_key: Any, value: Any) -> None:
        """Store one encoded result meta (one SET)."""
        self.client.set(self.key(celery_key), value, ex=self._expires)

    def get(self, celery_key: Any) -> Any:
        """The encoded result meta, or None."""
        return self.client.get(self.key(celery_key))
