"""Per-process wiring for the Celery side: stores, ledger, blueprints and registry from the config.

Built once per process on first use (workers after fork, clients on first call), so the
Cosmos client, Redis pool and loaded blueprints are shared by every task the process runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from flowcraft_celery.engine.builtins import BUILTIN_REGISTRY
from flowcraft_celery.engine.registry import Registry, default_registry, import_modules
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.catalog import load_blueprints
from flowcraft_celery.stores.base import ContextStore, CoordinationStore, StatusStore
from flowcraft_celery.stores.ledger import RunLedger
from flowcraft_celery.stores.timeline import RunTimeline


@dataclass
class Runtime:
    """What the bridge and the client need, built from the Celery configuration."""

    contexts: ContextStore
    statuses: StatusStore
    coordination: CoordinationStore
    ledger: RunLedger
    blueprints: dict[str, Blueprint]
    registry: Registry
    timeline: RunTimeline
    touch_interval: float = 5.0
    stall_seconds: float = 60.0
    inline_depth: int = 8
    fanout_group: int = 4
    _touched: dict[str, float] = field(default_factory=dict)

    def touch(self, run_id: str) -> None:
        """Refresh the run's `lastUpdated`, at most once per `touch_interval` per process."""
        now = time.monotonic()
        if now - self._touched.get(run_id, -1e9) >= self.touch_interval:
            self._touched[run_id] = now
            if len(self._touched) > 10_000:
                self._touched.clear()
            self.statuses.touch(run_id)


_lock = threading.Lock()
_runtimes: dict[int, Runtime] = {}


def runtime_for(conf: Mapping[str, Any]) -> Runtime:
    """The process's runtime for this configuration (built on first call)."""
    key = id(conf)
    with _lock:
        if key not in _runtimes:
            _runtimes[key] = build_runtime(conf)
        return _runtimes[key]


def reset_runtimes() -> None:
    """Forget built runtimes (after a fork, or when a test changes the configuration)."""
    with _lock:
        _runtimes.clear()


def deployment_name(conf: Mapping[str, Any]) -> str:
    """The deployment's name: the full name of its default queue (queue prefix + default queue).

    Runs carry it; listing and reconcile see only their own deployment's runs, so deployments
    sharing a Cosmos database and a Redis prefix never touch each other's runs.
    """
    options = conf.get("broker_transport_options") or {}
    return f"{options.get('queue_name_prefix') or ''}{conf.get('task_default_queue') or 'celery'}"


def build_runtime(conf: Mapping[str, Any]) -> Runtime:
    """Connect to Cosmos and Redis and load node modules and blueprints named in `conf`."""
    from flowcraft_celery.stores.cosmos import CosmosContextStore, CosmosStatusStore
    from flowcraft_celery.stores.cosmos_client import get_client
    from flowcraft_celery.stores.redis import RedisCoordinationStore

    import_modules(list(conf.get("flowcraft_node_modules") or []))
    client = get_client(conf.get("cosmos_connection_string"), conf.get("cosmos_verify_tls"))
    database = str(conf.get("cosmos_database") or "flowcraft")
    redis_client = redis.Redis.from_url(str(conf.get("flowcraft_redis_url") or "redis://127.0.0.1:6379/0"))
    prefix = str(conf.get("flowcraft_key_prefix") or "flowcraft:")
    return Runtime(
        contexts=CosmosContextStore(client, database, str(conf.get("cosmos_context_container") or "context")),
        statuses=CosmosStatusStore(client, database, str(conf.get("cosmos_runs_container") or "runs"),
                                   deployment_name(conf)),
        coordination=RedisCoordinationStore(redis_client, prefix),
        ledger=RunLedger(redis_client, prefix),
        blueprints=load_blueprints(list(conf.get("flowcraft_blueprints") or [])),
        registry=BUILTIN_REGISTRY.merged(default_registry),
        timeline=RunTimeline(redis_client, prefix),
        touch_interval=float(conf.get("flowcraft_touch_interval") or 5.0),
        stall_seconds=float(conf.get("flowcraft_stall_seconds") or 60.0),
        inline_depth=int(conf.get("flowcraft_inline_depth", 8)),
        fanout_group=int(conf.get("flowcraft_fanout_group", 4)),
    )
