"""flowcraft-celery's default Celery configuration; every value can be overridden from the environment.

Point the app at your services with AZURE_STORAGE_CONNECTION_STRING, AZURE_COSMOS_CONNECTION_STRING
(and FLOWCRAFT_COSMOS_VERIFY_TLS=false for the emulator) and REDIS_URL; name your workflows with
FLOWCRAFT_NODE_MODULES (modules defining `@node`s) and FLOWCRAFT_BLUEPRINTS (JSON files, folders,
or `module:attribute` Python builders), comma-separated.
"""

from __future__ import annotations

import os
import re
from typing import Any

from kombu import Exchange, Queue

from flowcraft_celery.distributed.core.shards import shard_names


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_number(name: str, default: str, kind: type[int] | type[float], minimum: float = 0) -> Any:
    """A number from the environment; a wrong one stops here, naming the variable."""
    text = _env(name, default)
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not minimum <= value < float("inf"):
        from flowcraft_celery.distributed.core.problems import SettingError

        what = "a whole number" if kind is int else "a number"
        raise SettingError(name, f"{text!r} is not {what} of at least {minimum:g}",
                           f"unset it for the default ({default})")
    return value


def _env_queue_name(name: str, default: str, prefix: str | None = None) -> str:
    """A queue prefix (`prefix` None) or a queue name (under `prefix`) from the environment; one
    outside Azure's naming rules stops here, naming the variable and the rule."""
    from transports.azurequeue.naming import QUEUE_NAME_RULE, prefix_problem, queue_problem

    text = _env(name, default)
    problem = prefix_problem(text) if prefix is None else queue_problem(text, prefix)
    if problem is not None:
        from flowcraft_celery.distributed.core.problems import SettingError

        shape, end = (" (a prefix may end with one hyphen)", "-") if prefix is None else ("", "")
        fixed = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "flowcraft"
        raise SettingError(name, f"{text!r} {problem}: {QUEUE_NAME_RULE}{shape}", f"e.g. {fixed + end!r}")
    return text


def _env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in _env(name, default).split(",") if item.strip()]


# Broker: Azure Queue Storage through our transport (transports/azurequeue/__init__.py).
broker_url = _env("CELERY_BROKER_URL", "azurequeue://")
# With Redis (REDIS_URL, which the workflows need anyway) the transport wakes an idle worker the
# moment a message is sent and carries remote control, replies and events (Flower) over Redis;
# Azure is still polled, every 8 s at most, as the safety net.
broker_transport_options = {
    "queue_name_prefix": _env_queue_name("FLOWCRAFT_QUEUE_PREFIX", ""),
    "visibility_timeout": _env_number("FLOWCRAFT_VISIBILITY_TIMEOUT", "30", int),
    "redis_url": _env("REDIS_URL", "redis://127.0.0.1:6379/0"),
    # Storage throttling (503 ServerBusy, 500 OperationTimedOut) is retried after this many seconds,
    # doubling up to the maximum, at most FLOWCRAFT_STORAGE_RETRY_TOTAL times (the SDK's own default
    # waits 15 s and more; see transports/azurequeue/throttling.py).
    "retry_first_backoff": _env_number("FLOWCRAFT_STORAGE_RETRY_BACKOFF", "0.25", float),
    "retry_max_backoff": _env_number("FLOWCRAFT_STORAGE_RETRY_MAX_BACKOFF", "4", float),
    "retry_total": _env_number("FLOWCRAFT_STORAGE_RETRY_TOTAL", "10", int),
}
# Results: Cosmos DB (flowcraft_celery/backends/cosmos.py). A node task's result is small (its run
# and the nodes it handled) and kept in Redis; a run's state lives in the context and status stores.
result_backend = _env("CELERY_RESULT_BACKEND", "cosmos://")
# Without AccountKey in AZURE_COSMOS_CONNECTION_STRING (only AccountEndpoint=...;), Cosmos DB is reached
# with Microsoft Entra ID: DefaultAzureCredential, or the TokenCredential FLOWCRAFT_COSMOS_CREDENTIAL
# names as module:attribute.
cosmos_credential = _env("FLOWCRAFT_COSMOS_CREDENTIAL", "")
cosmos_database = _env("FLOWCRAFT_COSMOS_DATABASE", "flowcraft")
cosmos_results_container = _env("FLOWCRAFT_COSMOS_RESULTS_CONTAINER", "celery_results")
cosmos_context_container = _env("FLOWCRAFT_COSMOS_CONTEXT_CONTAINER", "context")
cosmos_runs_container = _env("FLOWCRAFT_COSMOS_RUNS_CONTAINER", "runs")

task_default_queue = _env_queue_name("FLOWCRAFT_DEFAULT_QUEUE", "flowcraft",
                                     broker_transport_options["queue_name_prefix"])
task_acks_late = True
task_reject_on_worker_lost = True
# A worker takes from the queue only what its pool can start now (1 per process; node tasks ack
# late, so a running task still counts): long nodes then spread over every worker with a free
# process instead of waiting in one busy worker's prefetch (Celery's default is 4). A larger value
# lets a worker receive ahead, which suits a flood of very short nodes on few workers.
worker_prefetch_multiplier = _env_number("FLOWCRAFT_PREFETCH_MULTIPLIER", "1", int)
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
worker_send_task_events = _env("FLOWCRAFT_TASK_EVENTS", "true").lower() in ("1", "true", "yes")
task_send_sent_event = worker_send_task_events
# Log lines a node writes name it: ` [run=<id> bp=<blueprint> node=<node>@<iteration>]` (empty
# elsewhere); the same fields are record attributes run_id, blueprint_id, node_id, iteration.
worker_log_format = "[%(asctime)s: %(levelname)s/%(processName)s]%(flowcraft)s %(message)s"
worker_task_log_format = ("[%(asctime)s: %(levelname)s/%(processName)s]%(flowcraft)s "
                          "%(task_name)s[%(task_id)s]: %(message)s")

# Workflows.
flowcraft_node_modules = _env_list("FLOWCRAFT_NODE_MODULES")
flowcraft_blueprints = _env_list("FLOWCRAFT_BLUEPRINTS")
# REDIS_URL may be rediss:// (TLS; `?ssl_ca_certs=/path/ca.pem` for a private CA). Azure Cache for Redis with
# Microsoft Entra authentication: a rediss:// URL without password and FLOWCRAFT_REDIS_CREDENTIAL=
# DefaultAzureCredential (or module:attribute naming a TokenCredential); every Redis client reads it.
flowcraft_redis_url = _env("REDIS_URL", "redis://127.0.0.1:6379/0")
flowcraft_key_prefix = _env("FLOWCRAFT_KEY_PREFIX", "flowcraft:")
flowcraft_touch_interval = _env_number("FLOWCRAFT_TOUCH_INTERVAL", "5", float)
flowcraft_stall_seconds = _env_number("FLOWCRAFT_STALL_SECONDS", "60", float)
flowcraft_reconcile_interval = _env_number("FLOWCRAFT_RECONCILE_INTERVAL", "30", float)
# Runs one reconcile pass looks at, at most (in due order; the rest go first in the next pass).
flowcraft_reconcile_budget = _env_number("FLOWCRAFT_RECONCILE_BUDGET", "200", int, minimum=1)
# A completed, failed or cancelled run's status, context, outputs and Redis keys are kept this many
# days after it ends, then expire (Cosmos DB per-item TTL, Redis EXPIRE); 0 keeps them for ever.
# Running, awaiting and sleeping runs never expire. `flowcraft-celery purge` removes old runs on demand.
flowcraft_retention_days = _env_number("FLOWCRAFT_RETENTION_DAYS", "7", float)
# Every node is its own Celery task by default (its own task id, state and runtime in Flower,
# per-task rate and time limits, revoke, routing). Opt-ins that trade that for speed:
# FLOWCRAFT_INLINE_DEPTH > 0 runs up to that many successive nodes inside one task when a node
# starts a successor on the same queue (a chain hop without a queue round trip), and
# FLOWCRAFT_FANOUT_GROUP > 1 packs up to that many successors of one implementation into one task
# message (one queue send, receive and delete per pack). See README, "One task per node".
flowcraft_inline_depth = _env_number("FLOWCRAFT_INLINE_DEPTH", "0", int)
flowcraft_fanout_group = _env_number("FLOWCRAFT_FANOUT_GROUP", "1", int, 1)
# Subflows may nest this many runs deep; a subflow node past it fails its run with the reason.
flowcraft_subflow_depth = _env_number("FLOWCRAFT_SUBFLOW_DEPTH", "10", int)
# Webhook nodes' URLs start with this (where `flowcraft-celery webhooks serve` is reachable).
flowcraft_webhook_base_url = _env("FLOWCRAFT_WEBHOOK_BASE_URL", "http://127.0.0.1:8080/webhooks")

# Seconds a Redis call may take before it counts as an outage (retried with back-off).
flowcraft_redis_timeout = _env_number("FLOWCRAFT_REDIS_TIMEOUT", "10", float)
# A node that kills its worker process this many times fails its run (its message is dead-lettered);
# kept below the transport's max_delivery_count, so the worker, not the transport, sees the last crash.
flowcraft_max_node_crashes = _env_number("FLOWCRAFT_MAX_NODE_CRASHES", "3", int)
# Seconds `start` waits for the broker to take a new run's start messages before giving up.
flowcraft_start_timeout = _env_number("FLOWCRAFT_START_TIMEOUT", "20", float)
# Reconcile passes run on their own queue, so a backlog of node tasks cannot delay them; a worker
# started without -Q consumes both queues (one started with -Q consumes only what it names).
flowcraft_reconcile_queue = _env_queue_name("FLOWCRAFT_RECONCILE_QUEUE", f"{task_default_queue}-reconcile",
                                            broker_transport_options["queue_name_prefix"])
# FLOWCRAFT_QUEUE_SHARDS > 1 spreads each node queue's messages (the default queue's and each
# `config.queue`'s) over that many Azure queues (by run); workers consume every shard
# (flowcraft_celery/distributed/core/shards.py).
flowcraft_queue_shards = _env_number("FLOWCRAFT_QUEUE_SHARDS", "1", int, minimum=1)
task_queues = tuple(Queue(name, Exchange(name), routing_key=name) for name in
                    (*shard_names(task_default_queue, flowcraft_queue_shards), flowcraft_reconcile_queue))
task_routes = {"flowcraft.reconcile": {"queue": flowcraft_reconcile_queue}}

beat_schedule = {
    "flowcraft-reconcile": {
        "task": "flowcraft.reconcile",
        "schedule": flowcraft_reconcile_interval,
    },
}
