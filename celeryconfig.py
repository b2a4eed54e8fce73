"""flowcraft-celery's default Celery configuration; every value can be overridden from the environment.

Point the app at your services with AZURE_STORAGE_CONNECTION_STRING, AZURE_COSMOS_CONNECTION_STRING
(and FLOWCRAFT_COSMOS_VERIFY_TLS=false for the emulator) and REDIS_URL; name your workflows with
FLOWCRAFT_NODE_MODULES (modules defining `@node`s) and FLOWCRAFT_BLUEPRINTS (JSON files, folders,
or `module:attribute` Python builders), comma-separated.
"""

from __future__ import annotations

from kombu import Exchange, Queue

from flowcraft_celery.distributed.core.shards import shard_names
from flowcraft_celery.settings import Settings

# Every variable below comes from the environment, checked, with its default (flowcraft_celery/settings.py
# names each one's variable and default); a wrong value stops here with a SettingError naming the variable.
_settings = Settings.from_env()

# Broker: Azure Queue Storage through our transport (transports/azurequeue/__init__.py).
broker_url = _settings.broker_url
# With Redis (REDIS_URL, which the workflows need anyway) the transport wakes an idle worker the
# moment a message is sent and carries remote control, replies and events (Flower) over Redis;
# Azure is still polled, every 8 s at most, as the safety net.
broker_transport_options = {
    "queue_name_prefix": _settings.queue_prefix,
    "visibility_timeout": _settings.visibility_timeout,
    "redis_url": _settings.redis_url,
    # Storage throttling (503 ServerBusy, 500 OperationTimedOut) is retried after this many seconds,
    # doubling up to the maximum, at most FLOWCRAFT_STORAGE_RETRY_TOTAL times (the SDK's own default
    # waits 15 s and more; see transports/azurequeue/throttling.py).
    "retry_first_backoff": _settings.storage_retry_backoff,
    "retry_max_backoff": _settings.storage_retry_max_backoff,
    "retry_total": _settings.storage_retry_total,
    # Messages are sent, received and deleted with requests the transport signs with the account key (a
    # fifth of the SDK's CPU; anything unexpected goes through the SDK): FLOWCRAFT_DIRECT_QUEUE_REQUESTS=false
    # sends every request through the SDK.
    "direct_requests": _settings.direct_queue_requests,
    # Further storage accounts for queue shards (FLOWCRAFT_STORAGE_ACCOUNTS, whitespace-separated connection
    # strings): shard i of each node queue lives in account i mod K, account 0 being the connection string's.
    "storage_accounts": list(_settings.storage_accounts),
}
# Results: Cosmos DB (flowcraft_celery/backends/cosmos.py). A node task's result is small (its run
# and the nodes it handled) and kept in Redis; a run's state lives in the context and status stores.
result_backend = _settings.result_backend
# Without AccountKey in AZURE_COSMOS_CONNECTION_STRING (only AccountEndpoint=...;), Cosmos DB is reached
# with Microsoft Entra ID: DefaultAzureCredential, or the TokenCredential FLOWCRAFT_COSMOS_CREDENTIAL
# names as module:attribute.
cosmos_credential = _settings.cosmos_credential
cosmos_database = _settings.cosmos_database
# Node outputs are created with requests flowcraft signs with the account key on kept-alive connections
# (a fifth of the Cosmos SDK's CPU; anything but "created" or "exists" goes through the SDK):
# FLOWCRAFT_DIRECT_COSMOS_REQUESTS=false sends every request through the SDK.
flowcraft_direct_cosmos_requests = _settings.direct_cosmos_requests
cosmos_results_container = _settings.cosmos_results_container
cosmos_context_container = _settings.cosmos_context_container
cosmos_runs_container = _settings.cosmos_runs_container

task_default_queue = _settings.default_queue
task_acks_late = True
task_reject_on_worker_lost = True
# A worker takes from the queue only what its pool can start now (1 per process; node tasks ack
# late, so a running task still counts): long nodes then spread over every worker with a free
# process instead of waiting in one busy worker's prefetch (Celery's default is 4). A larger value
# lets a worker receive ahead, which suits a flood of very short nodes on few workers.
worker_prefetch_multiplier = _settings.prefetch_multiplier
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
worker_send_task_events = _settings.task_events
task_send_sent_event = worker_send_task_events
# Log lines a node writes name it: ` [run=<id> bp=<blueprint> node=<node>@<iteration>]` (empty
# elsewhere); the same fields are record attributes run_id, blueprint_id, node_id, iteration.
worker_log_format = "[%(asctime)s: %(levelname)s/%(processName)s]%(flowcraft)s %(message)s"
worker_task_log_format = ("[%(asctime)s: %(levelname)s/%(processName)s]%(flowcraft)s "
                          "%(task_name)s[%(task_id)s]: %(message)s")

# Workflows.
flowcraft_node_modules = list(_settings.node_modules)
flowcraft_blueprints = list(_settings.blueprints)
# REDIS_URL may be rediss:// (TLS; `?ssl_ca_certs=/path/ca.pem` for a private CA). Azure Cache for Redis with
# Microsoft Entra authentication: a rediss:// URL without password and FLOWCRAFT_REDIS_CREDENTIAL=
# DefaultAzureCredential (or module:attribute naming a TokenCredential); every Redis client reads it.
flowcraft_redis_url = _settings.redis_url
flowcraft_key_prefix = _settings.key_prefix
flowcraft_touch_interval = _settings.touch_interval
flowcraft_stall_seconds = _settings.stall_seconds
flowcraft_reconcile_interval = _settings.reconcile_interval
# Runs one reconcile pass looks at, at most (in due order; the rest go first in the next pass).
flowcraft_reconcile_budget = _settings.reconcile_budget
# A completed, failed or cancelled run's status, context, outputs and Redis keys are kept this many
# days after it ends, then expire (Cosmos DB per-item TTL, Redis EXPIRE); 0 keeps them for ever.
# Running, awaiting and sleeping runs never expire. `flowcraft-celery purge` removes old runs on demand.
flowcraft_retention_days = _settings.retention_days
# Every node is its own Celery task by default (its own task id, state and runtime in Flower,
# per-task rate and time limits, revoke, routing). Opt-ins that trade that for speed:
# FLOWCRAFT_INLINE_DEPTH > 0 runs up to that many successive nodes inside one task when a node
# starts a successor on the same queue (a chain hop without a queue round trip), and
# FLOWCRAFT_FANOUT_GROUP > 1 packs up to that many successors of one implementation into one task
# message (one queue send, receive and delete per pack). See README, "One task per node".
flowcraft_inline_depth = _settings.inline_depth
flowcraft_fanout_group = _settings.fanout_group
# Subflows may nest this many runs deep; a subflow node past it fails its run with the reason.
flowcraft_subflow_depth = _settings.subflow_depth
# Webhook nodes' URLs start with this (where `flowcraft-celery webhooks serve` is reachable).
flowcraft_webhook_base_url = _settings.webhook_base_url

# Seconds a Redis call may take before it counts as an outage (retried with back-off).
flowcraft_redis_timeout = _settings.redis_timeout
# A node that kills its worker process this many times fails its run (its message is dead-lettered);
# kept below the transport's max_delivery_count, so the worker, not the transport, sees the last crash.
flowcraft_max_node_crashes = _settings.max_node_crashes
# Seconds `start` waits for the broker to take a new run's start messages before giving up.
flowcraft_start_timeout = _settings.start_timeout
# Reconcile passes run on their own queue, so a backlog of node tasks cannot delay them; a worker
# started without -Q consumes both queues (one started with -Q consumes only what it names).
flowcraft_reconcile_queue = _settings.reconcile_queue_name
# FLOWCRAFT_QUEUE_SHARDS > 1 spreads each node queue's messages (the default queue's and each
# `config.queue`'s) over that many Azure queues (by run); workers consume every shard
# (flowcraft_celery/distributed/core/shards.py).
flowcraft_queue_shards = _settings.queue_shards
task_queues = tuple(Queue(name, Exchange(name), routing_key=name) for name in
                    (*shard_names(task_default_queue, flowcraft_queue_shards), flowcraft_reconcile_queue))
task_routes = {"flowcraft.reconcile": {"queue": flowcraft_reconcile_queue}}

beat_schedule = {
    "flowcraft-reconcile": {
        "task": "flowcraft.reconcile",
        "schedule": flowcraft_reconcile_interval,
    },
}
