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
from flowcraft_celery.distributed.core.settings import (
    DEFAULT_MAX_NODE_CRASHES,
    blueprint_sources,
    deployment_name,
    key_prefix,
    max_node_crashes,
    redis_url,
)
from flowcraft_celery.engine.builtins import BUILTIN_REGISTRY, DEFAULT_SUBFLOW_DEPTH, DEFAULT_WEBHOOK_BASE_URL
from flowcraft_celery.engine.registry import Registry, default_registry
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.catalog import Catalog
from flowcraft_celery.model.validation import BUILTIN_USES
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
    touch_interval: float = 5.0
    stall_seconds: float = 60.0
    inline_depth: int = 0
    fanout_group: int = 1
    #: Times a node may kill its worker process before its run fails (FLOWCRAFT_MAX_NODE_CRASHES).
    max_node_crashes: int = DEFAULT_MAX_NODE_CRASHES
    #: Seconds a finished run's records are kept (0: for ever).
    retention_seconds: float = 7 * 86400.0
    subflow_depth: int = DEFAULT_SUBFLOW_DEPTH
    webhook_base_url: str = DEFAULT_WEBHOOK_BASE_URL
    _touched: dict[str, float] = field(default_factory=dict)

    def touch(self, run_id: str) -> None:
        """Refresh the run's `lastUpdated` and its due time, at most once per `touch_interval` per process."""
        now = time.monotonic()
        if now - self._touched.get(run_id, -1e9) >= self.touch_interval:
            self._touched[run_id] = now
            if len(self._touched) > 10_000:
                self._touched.clear()
            self.statuses.touch(run_id)
            self.arm(run_id)

    def arm(self, run_id: str) -> None:
        """Make reconcile look at the run a stall threshold from now (unless it moves on before)."""
        self.due.arm(run_id, time.time() + self.stall_seconds)

    def implementations(self) -> Container[str] | None:
        """The node implementations a run may use: this process's, and those the deployment's workers
        published; None (not checked) when neither knows any beyond the built-ins."""
        local = set(default_registry)
        if isinstance(self.blueprints, DeploymentBlueprints):
            local |= self.blueprints.implementations()
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

    cosmos = f"Cosmos DB at {cosmos_endpoint(conf)}"
    client = call(cosmos, get_client, conf.get("cosmos_connection_string"), conf.get("cosmos_verify_tls"),
                  conf.get("cosmos_credential") or None)
    database = str(conf.get("cosmos_database") or "flowcraft")
    url = redis_url(conf)
    timeout = float(conf.get("flowcraft_redis_timeout") or 10.0)
    redis_client = redis_from_url(url, socket_timeout=timeout,
                                        socket_connect_timeout=min(timeout, REDIS_CONNECT_TIMEOUT),
                                        health_check_interval=30)
    redis_name = f"Redis at {redis_endpoint(url)}"
    prefix = key_prefix(conf)
    deployment = deployment_name(conf)
    context_store = call(cosmos, CosmosContextStore, client, database,
                         str(conf.get("cosmos_context_container") or "context"))
    status_store = call(cosmos, CosmosStatusStore, client, database, str(conf.get("cosmos_runs_container") or "runs"),
                        deployment)
    contexts = guarded(context_store, cosmos)
    statuses = guarded(status_store, cosmos)
    coordination = guarded(RedisCoordinationStore(redis_client, prefix), redis_name)
    ledger = guarded(RunLedger(redis_client, prefix), redis_name)
    catalog = guarded(RedisCatalogStore(redis_client, prefix, deployment), redis_name)
    code = worker_code(conf)
    blueprints: Mapping[str, Blueprint] = (
        code.blueprints if code is not None else DeploymentBlueprints(catalog, Catalog(blueprint_sources(conf))))
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
        touch_interval=float(conf.get("flowcraft_touch_interval") or 5.0),
        stall_seconds=float(conf.get("flowcraft_stall_seconds") or 60.0),
        inline_depth=int(conf.get("flowcraft_inline_depth", 0)),
        fanout_group=int(conf.get("flowcraft_fanout_group", 1)),
        max_node_crashes=max_node_crashes(conf),
        retention_seconds=float(conf.get("flowcraft_retention_days", 7)) * 86400,
        subflow_depth=int(conf.get("flowcraft_subflow_depth", DEFAULT_SUBFLOW_DEPTH)),
        webhook_base_url=str(conf.get("flowcraft_webhook_base_url") or DEFAULT_WEBHOOK_BASE_URL),
    )
