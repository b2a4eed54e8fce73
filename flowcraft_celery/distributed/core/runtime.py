"""Per-process wiring for the Celery side: stores, ledger, blueprints and registry from the config.

Built once per process on first use (workers after fork, clients on first call), so the
Cosmos client, Redis pool and loaded blueprints are shared by every task the process runs.
Every store is `guarded`: a Cosmos or Redis failure surfaces as an `InfrastructureError`
naming the endpoint, and Redis calls time out (`flowcraft_redis_timeout`) instead of hanging.
Building it reads no blueprint: a client that only lists runs never touches blueprint files.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from flowcraft_celery.distributed.core.published import DeploymentBlueprints, worker_code
from flowcraft_celery.engine.builtins import BUILTIN_REGISTRY
from flowcraft_celery.engine.registry import Registry, default_registry
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.catalog import Catalog
from flowcraft_celery.model.validation import BUILTIN_USES
from flowcraft_celery.settings import Settings
from flowcraft_celery.stores.base import ContextStore, CoordinationStore, StatusStore
from flowcraft_celery.stores.catalog import RedisCatalogStore
from flowcraft_celery.stores.due import DueIndex
from flowcraft_celery.stores.guard import call, guarded
from flowcraft_celery.stores.ledger import RunLedger
from flowcraft_celery.stores.timeline import RunTimeline
from transports.azurequeue import redis_from_url

#: Seconds a Redis connection attempt may take (a refused or unroutable endpoint fails fast).
REDIS_CONNECT_TIMEOUT = 5.0

if TYPE_CHECKING:
    from flowcraft_celery.stores.retention import RunRecords


@dataclass
class Runtime:
    """What the bridge and the client need, built from the Celery configuration."""

    contexts: ContextStore
    statuses: StatusStore
    coordination: CoordinationStore
    ledger: RunLedger
    blueprints: Mapping[str, Blueprint]
    registry: Registry
    timeline: RunTimeline
    records: RunRecords
    #: When reconcile next looks at each live run (stores/due.py).
    due: DueIndex
    catalog: RedisCatalogStore | None = None
    #: The process's settings (stall threshold, inline depth, retention, ...), checked.
    settings: Settings = field(default_factory=Settings)
    _touched: dict[str, float] = field(default_factory=dict)

    def touch(self, run_id: str) -> None:
        """Refresh the run's `lastUpdated` and its due time, at most once per `touch_interval` per process."""
        now = time.monotonic()
        if now - self._touched.get(run_id, -1e9) >= self.settings.touch_interval:
            self._touched[run_id] = now
            if len(self._touched) > 10_000:
                self._touched.clear()
            self.statuses.touch(run_id)
            self.arm(run_id)

    def arm(self, run_id: str) -> None:
        """Make reconcile look at the run a stall threshold from now (unless it moves on before)."""
        self.due.arm(run_id, time.time() + self.settings.stall_seconds)

    def implementations(self, fresh: bool = False) -> Container[str] | None:
        """The node implementations a run may use: this process's, and those the deployment's workers
        published (read again when `fresh`, else at most every few seconds); None (not checked)
        when neither knows any beyond the built-ins."""
        local = set(default_registry)
        if isinstance(self.blueprints, DeploymentBlueprints):
            local |= self.blueprints.implementations(fresh)
        if not local:
            return None
        return local | set(self.registry) | set(BUILTIN_USES)


_lock = threading.Lock()
_runtimes: dict[int, tuple[Mapping[str, Any], Runtime]] = {}


def runtime_for(conf: Mapping[str, Any]) -> Runtime:
    """The process's runtime for this configuration (built on first call; the configuration is
    kept with it, so a new configuration that reuses a freed one's id gets its own runtime)."""
    key = id(conf)
    with _lock:
        known = _runtimes.get(key)
        if known is None or known[0] is not conf:
            known = (conf, build_runtime(conf))
            _runtimes[key] = known
        return known[1]


def reset_runtimes() -> None:
    """Forget built runtimes (after a fork, or when a test changes the configuration)."""
    with _lock:
        _runtimes.clear()


def redis_endpoint(url: str) -> str:
    """A Redis URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def cosmos_endpoint(conf: Mapping[str, Any]) -> str:
    """The Cosmos account endpoint named by the configuration (or the environment), for messages."""
    from flowcraft_celery.stores.cosmos_client import (
        CosmosConfigError,
        connection_string_from_env,
        parse_connection_string,
    )

    try:
        conn_str = conf.get("cosmos_connection_string") or connection_string_from_env()
        return parse_connection_string(str(conn_str)).endpoint
    except CosmosConfigError:
        return "(no Cosmos endpoint configured)"


def build_runtime(conf: Mapping[str, Any]) -> Runtime:
    """Connect to Cosmos and Redis; a worker's blueprints are the ones it read at start, a client's
    are the deployment's published catalog (with FLOWCRAFT_BLUEPRINTS, read lazily, for the rest)."""
    from flowcraft_celery.stores.cosmos import CosmosContextStore, CosmosStatusStore
    from flowcraft_celery.stores.cosmos_client import get_client
    from flowcraft_celery.stores.redis import RedisCoordinationStore
    from flowcraft_celery.stores.retention import RunRecords

    settings = Settings.from_conf(conf)
    cosmos = f"Cosmos DB at {cosmos_endpoint(conf)}"
    client = call(cosmos, get_client, conf.get("cosmos_connection_string"), conf.get("cosmos_verify_tls"),
                  settings.cosmos_credential or None)
    database = settings.cosmos_database
    url = settings.redis_url
    timeout = settings.redis_timeout
    redis_client = redis_from_url(url, socket_timeout=timeout,
                                        socket_connect_timeout=min(timeout, REDIS_CONNECT_TIMEOUT),
                                        health_check_interval=30)
    redis_name = f"Redis at {redis_endpoint(url)}"
    prefix = settings.key_prefix
    deployment = settings.deployment
    context_store = call(cosmos, CosmosContextStore, client, database, settings.cosmos_context_container,
                         settings.direct_cosmos_requests)
    status_store = call(cosmos, CosmosStatusStore, client, database, settings.cosmos_runs_container, deployment,
                        settings.direct_cosmos_requests)
    contexts = guarded(context_store, cosmos)
    statuses = guarded(status_store, cosmos)
    coordination = guarded(RedisCoordinationStore(redis_client, prefix), redis_name)
    ledger = guarded(RunLedger(redis_client, prefix), redis_name)
    catalog = guarded(RedisCatalogStore(redis_client, prefix, deployment), redis_name)
    code = worker_code(conf)
    blueprints: Mapping[str, Blueprint] = (
        code.blueprints if code is not None else DeploymentBlueprints(catalog, Catalog(list(settings.blueprints))))
    return Runtime(
        contexts=contexts,
        statuses=statuses,
        coordination=coordination,
        ledger=ledger,
        blueprints=blueprints,
        registry=BUILTIN_REGISTRY.merged(default_registry),
        timeline=guarded(RunTimeline(redis_client, prefix), redis_name),
        records=RunRecords(contexts, statuses, ledger, coordination),
        due=guarded(DueIndex(redis_client, prefix, deployment), redis_name),
        catalog=catalog,
        settings=settings,
    )
