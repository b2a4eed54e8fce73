"""The catalog a deployment's workers publish in Redis: blueprint documents and node implementations.

Keys under `<prefix>catalog:<deployment>:`:
- `blueprints`: hash, blueprint id -> JSON `{id, version, fingerprint, uses, publishedAt, worker}`;
- `doc:<id>:<fingerprint>`: the blueprint document (JSON), written once per content;
- `workers`: hash, worker name -> JSON `{worker, nodes, blueprints, queues, startedAt}` (removed
  when the worker stops).

A worker publishes when it starts, so the newest worker's blueprints win; a client reads the
catalog to start, validate and resume runs without the workers' files or modules.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import redis


class RedisCatalogStore:
    """Publish and read one deployment's catalog."""

    def __init__(self, client: redis.Redis, prefix: str, deployment: str) -> None:
        self._redis = client
        self._base = f"{prefix}catalog:{deployment}:"

    def publish(self, worker: Mapping[str, Any], blueprints: Sequence[tuple[Mapping[str, Any], str]]) -> None:
        """Record a worker and its blueprints (`(entry, document JSON)` pairs); documents are written once."""
        pipe = self._redis.pipeline(transaction=False)
        for entry, document in blueprints:
            pipe.set(f"{self._base}doc:{entry['id']}:{entry['fingerprint']}", document, nx=True)
            pipe.hset(f"{self._base}blueprints", str(entry["id"]), json.dumps(dict(entry)))
        pipe.hset(f"{self._base}workers", str(worker["worker"]), json.dumps(dict(worker)))
        pipe.execute()

    def forget_worker(self, name: str) -> None:
        """Remove a worker that stopped (its blueprints stay published)."""
        self._redis.hdel(f"{self._base}workers", name)

    def entries(self) -> dict[str, dict[str, Any]]:
        """Every published blueprint's entry, by id."""
        raw = self._redis.hgetall(f"{self._base}blueprints")
        return {_text(k): json.loads(v) for k, v in raw.items()}

    def entry(self, blueprint_id: str) -> dict[str, Any] | None:
        """One blueprint's entry, or None."""
        raw = self._redis.hget(f"{self._base}blueprints", blueprint_id)
        return None if raw is None else dict(json.loads(raw))

    def document(self, blueprint_id: str, fingerprint: str) -> str | None:
        """A published blueprint document (JSON text), or None."""
        raw = self._redis.get(f"{self._base}doc:{blueprint_id}:{fingerprint}")
        return None if raw is None else _text(raw)

    def workers(self) -> dict[str, dict[str, Any]]:
        """Every worker that published, by name."""
        raw = self._redis.hgetall(f"{self._base}workers")
        return {_text(k): json.loads(v) for k, v in raw.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
