"""Azure Queue Storage transport module for Kombu (``azurequeue://``).

At-least-once delivery over Azure Queue Storage, usable as Celery's broker at Celery's defaults
(prefork pool, prefetch multiplier 4), with Redis (when configured) for instant wake-up and for
Celery's control, reply and event traffic.

Features
========
* Type: Virtual, asynchronous (a worker runs it on its event loop; an I/O thread receives)
* Supports Direct: Yes, across processes
* Supports Topic: Yes, across processes
* Supports Fanout: Yes, across processes (so ``celery inspect``/``control``, events, Flower work)
* Supports Priority: No
* Supports TTL: Yes (message ``expiration`` and queue ``x-message-ttl``/``Queue(message_ttl=)``),
  on Azure queues and on transient queues in Redis alike. A Celery task message's ``expiration``
  (Celery sets it from the task's ``expires``) is not applied: the message reaches a worker, which
  sees ``expires`` has passed and records the task REVOKED, as Celery does on any broker; dropped
  unseen by Azure, its result would stay PENDING for ever.
* Acknowledgements: a received message stays invisible and is deleted on ack; its invisibility
  is extended while the consumer holds it (prefetched or running); if the consumer dies it
  reappears after ``visibility_timeout``. ``reject(requeue=True)`` makes it visible at once,
  ``reject(requeue=False)`` moves it to the dead-letter queue ``<queue>-dlq``.
* Poison messages: undecodable bodies and messages delivered more than ``max_delivery_count``
  times go to ``<queue>-dlq`` with the reason in their ``x-dead-letter-*`` headers.
* Delayed delivery: a message with a Celery ``eta`` (countdown/ETA/retry) is sent hidden for the
  whole seconds until it is due, so it appears up to a second early; the consumer that receives
  it keeps it (held, renewed, counted against its prefetch) and delivers it at its due time.
  Longer than 7 days: it hops.
* Large bodies: a message longer than ``large_message_threshold`` is stored in Blob Storage and
  the queue carries a reference; the blob is deleted on ack.
* Batching: receives up to 32 messages per request (bounded by the prefetch room), acks in
  parallel; with ``redis_url``, sends made inside ``bundled()`` to one queue travel as
  bundles of up to ``bundle_size`` messages in one Azure message (see Bundles).
* Warm shutdown of a Celery worker hands the messages it prefetched but never started back at
  once (visibility 0) and exits when the running tasks finish: the worker step
  ``transports.azurequeue.handback.HandBackUnstarted``, which the app adds
  (``app.steps["worker"].add(HandBackUnstarted)``; Flowcraft's app does). It is the one module
  that imports Celery; importing the transport never does.

Connection String
=================

.. code-block::

    azurequeue://                                     # connection string from the option
                                                      # ``connection_string`` or the environment
                                                      # variable AZURE_STORAGE_CONNECTION_STRING
    azurequeue://<ACCOUNT_KEY>@<ACCOUNT_URL>          # e.g. https://acct.queue.core.windows.net
    azurequeue://<SAS_TOKEN>@<ACCOUNT_URL>
    azurequeue://DefaultAzureCredential@<ACCOUNT_URL> # needs the ``identity`` extra
                                                      # (role: Storage Queue Data Contributor, and
                                                      # Storage Blob Data Contributor for large bodies)

Connecting (Kombu's ``connect()``/``ensure_connection``, a Celery worker's start) makes one request
to the account, and to each account of ``storage_accounts`` (list one queue name, no retry,
timeout Kombu's ``connect_timeout`` / Celery's ``broker_connection_timeout``, at most 5 s) and,
with ``redis_url``, one Redis PING: an account or Redis that does not answer, or a key the account
refuses, fails the connection with an error that names the (masked) URL or the entry, so Celery
prints ``Cannot connect to azurequeue://**@…: … does not answer`` and retries as for any broker.
A healthy account costs one request (~10 ms) per connection.

Credentials are masked in ``repr``, logs and ``celery report``. A connection string put in
``broker_transport_options`` should be wrapped in :class:`transports.azurequeue.Secret`
so ``celery report`` masks it too (the environment variable needs nothing).

Transport Options
=================

* ``connection_string``: account connection string (default: ``AZURE_STORAGE_CONNECTION_STRING``).
* ``storage_accounts``: further storage accounts for queue shards (default none): a list, or one
  text separated by whitespace, of connection strings or ``azurequeue://<credential>@<account url>``
  (wrap each in ``Secret``). With K accounts in all (the broker URL's is account 0), a queue named
  ``<queue>-shard<i>`` and its dead-letter queue live in account i mod K, every other queue in
  account 0 (see Storage accounts).
* ``queue_name_prefix``: prepended to every queue name (default ``""``).
* ``visibility_timeout``: seconds a received message stays invisible, renewed while held
  (default 30).
* ``max_delivery_count``: deliveries after which a message is dead-lettered (default 5).
* ``redis_url``: Redis for wake-up signals and transient queues (default none: Azure only).
  Every process of a deployment (workers, beat, clients, Flower) must use the same setting.
* ``redis_key_prefix``: prefix of the transport's Redis keys, followed by ``queue_name_prefix``
  (default ``azurequeue:``).
* ``redis_credential``: Microsoft Entra ID for a ``redis_url`` without password (Azure Cache for
  Redis with Entra authentication): ``DefaultAzureCredential`` or ``module:attribute`` naming a
  TokenCredential (default: the environment variable ``FLOWCRAFT_REDIS_CREDENTIAL``; none). TLS:
  ``rediss://``, with ``?ssl_ca_certs=/path/ca.pem`` for a private CA (see ``redisauth``).
* ``polling_interval``: without Redis, first wait after an empty poll, doubled per empty poll
  (default 0.1 s).
* ``max_polling_interval``: longest wait between polls of an idle queue; with Redis, the
  safety-net poll of every consumed queue (default 8 s).
* ``gather_seconds``: how long a consumer that already holds messages lets a trickle gather
  before receiving (default 0.02 s).
* ``max_messages_per_poll``: batch size of a receive, 1-32, also bounded by prefetch
  (default 32).
* ``large_message_threshold``: message text length above which the body goes to Blob Storage
  (default 61440; Azure's limit is 64 KiB).
* ``blob_container``: container for large bodies (default ``kombu-large-messages``).
* ``blob_account_url``: blob endpoint when the broker URL is an account URL whose host has no
  ``.queue.`` to replace (default: derived).
* ``binding_cache_seconds``: how long a process trusts its copy of the shared binding table
  before checking it again when publishing through an exchange (default 5 s; with Redis the
  check is one GET of a version counter, the table is listed again only when it changed).
* ``queue_heartbeat_interval``: how often a consumer marks its transient Azure queues alive
  (without Redis); such a queue silent for 3 intervals is deleted by whoever lists the bindings
  (default 60 s).
* ``transient_max_length``: messages a transient queue in Redis keeps at most (default 10000).
* ``settle_threads``: threads that ack, requeue and dead-letter in parallel (default 8).
* ``bundle_size``: most messages one Azure message carries when sent inside ``bundled()``
  (1-32, default 4; 1: no bundles).
* ``retry_first_backoff``, ``retry_max_backoff``, ``retry_total``: the Storage retry policy (see
  Throttling; defaults 0.25 s, 4 s, 10).
* ``direct_requests``: send, receive and delete messages with requests signed by the transport
  (``directqueue``: an account key, no proxy) instead of through the SDK's pipeline, which costs
  five times the CPU; any answer but the expected one hands the request to the SDK (default true).

Storage accounts
================

One account serves about 20,000 requests/s. The ``storage_accounts`` option spreads queue shards
over several (``accounts.Accounts`` is the one place that maps a queue to its account): shard i of
a queue, ``<queue>-shard<i>``, lives in account i mod K, and so do its dead-letter queue and the
large bodies of its messages (the account's blob service); a queue's shard 0 (the queue itself)
and every other queue (control, replies, events, reconcile) stay in account 0. Every request for
a queue (send, receive, delete, visibility, declare, purge, size, dead-letter) goes to its
account; the binding table is listed from every account (one listing request per account; a
further account that fails a listing keeps its last listing, so its shards stay routable), and
connecting checks every account (one request each): a malformed entry is an ``AccountError`` and
an account that does not answer a ``BrokerUnreachable``, each naming the entry by its number.
With one account nothing changes and nothing more is asked.

Threads and the event loop
==========================

Receiving never happens on the caller's thread. Each connection that consumes has one I/O
thread (``receiver.Receiver``): it polls the consumed Azure queues when they are due and only
while the channel has prefetch room, holds every received message at once (the lease keeper's
thread renews it at half the visibility timeout until it is acked, however long it waits in the
prefetch buffer or runs), and hands deliveries to an inbox. A Celery worker watches the inbox's
descriptor on its event loop (``asynchronous=True``, so Celery runs ``asynloop`` with the prefork
pool's non-blocking semaphore), so a full pool never stalls receiving, renewing, acking, remote
control or events; a plain Kombu ``drain_events(timeout)`` waits on the inbox. With Redis, a second
thread owns the transient queues (control, replies, events; see below): it keeps them alive and
waits on their lists alone, so a hung Azure request (an outage, a slow network) delays neither
``celery inspect`` nor control, and the worker's pidbox queue never lapses meanwhile. Acks,
requeues and dead-lettering run on ``settle_threads`` threads. Publishing is a direct request
from the caller.

Wake-up
=======

Azure has no long polling. With ``redis_url``, a sender pushes a token onto the queue's Redis list
after each send (one script call); consumers wait on those lists in one BLPOP, so exactly one
consumer with room wakes per message and polls at once (a consumer receiving k messages for
one token drops k-1 further tokens). A channel that already holds messages waits until half its
prefetch is free and ``gather_seconds`` before receiving, so busy workers receive in batches.
Delayed messages push the time they become visible; the consumer that takes that token polls
then. Azure is still polled every ``max_polling_interval`` as the safety net (messages of a
worker that died, tokens lost with Redis). Without Redis, polling backs off geometrically from
``polling_interval`` to ``max_polling_interval`` when idle: the first message after a long idle
time waits up to that long.

Control, replies and events
===========================

With ``redis_url``, transient queues (auto-delete or ``x-expires``: Celery's
``<host>.celery.pidbox``, ``<id>.reply.celery.pidbox`` and ``celeryev.<id>``) live in Redis
(``transient.TransientQueues``): a list per queue, bindings in a sorted set per exchange, both
kept alive by the declaring process and gone a few seconds after it dies; a queue is deleted
with its connection (auto-delete ones with their last consumer). ``celery inspect``/``control``/
``status`` and Flower therefore work at Celery's default timeouts against idle and busy
workers, and a client reusing its reply queue between calls never loses a reply. Messages of
transient queues are delivered at most once (Celery sends them without acks).
Without Redis they are Azure queues as well, found by polling like any other: a reply can take
up to about 1.5 x ``max_polling_interval``, far beyond Celery's 1 s default, so configure
``redis_url`` wherever remote control or Flower is used (every Flowcraft deployment has Redis).

Bundles
=======

Azure has no batch send or delete: each message costs a send and a delete however small. A
producer that sends many messages at once (a workflow node starting its successors, a run
starting its first nodes) can wrap the sends in ``with bundled():``; with ``redis_url`` the
immediate ones (no countdown or ETA) to each queue go out when the block ends, up to
``bundle_size`` per Azure message and never over ``large_message_threshold``. Every part stays
its own Kombu message and Celery task (task id, state, ack, retry, revoke, time limits). The
consumer holds a bundle's parts under one lease; an acked part is noted in a Redis set, the
Azure message is deleted with its last part, and after a consumer dies only the parts not yet
settled are delivered again. A requeued part is re-sent alone, a rejected one dead-lettered
alone. The receiver counts deliveries, not Azure messages, against the prefetch room, and a
consumer is never handed more than that room: the parts of a receive beyond it wait in the
receiver for up to 0.1 s and are handed to the consumer as its room opens (a short task ended);
what is still without room then goes back, together as one new Azure message that any consumer
can take (their earlier deliveries carried, this one not counted), so a bundle never parks work
in a busy worker while another could run it. Trade-offs: a queue's message count counts a bundle
once, and a consumer with less room than a bundle has parts (Celery's prefetch multiplier 1 on a
busy worker) whose tasks outlast the wait costs a send, a receive and a delete per split. See
``transports.azurequeue.bundles``.

Throttling
==========

Azure Queue Storage says no routinely: ``503 ServerBusy`` past about 2,000 messages/s per queue or
20,000 requests/s per account, ``500 OperationTimedOut`` when it is slow. That is back-pressure,
not failure. Every Storage client of the transport retries such answers, and reset connections,
with ``throttling.BackPressureRetry``: ``retry_first_backoff`` (0.25 s) before the first retry,
doubling up to ``retry_max_backoff`` (4 s), each wait drawn from its upper half, never shorter than
a ``Retry-After`` the service sent, at most ``retry_total`` (10) retries (about 30 s) before the
caller sees the error. The SDK's own default (15 s, then 18 s, 24 s) made a 10 % throttling rate
cost a workflow 15 times its time and let ``start`` time out; with this policy each throttled
request costs about one retry and a fraction of a second (``bench/throttle_bench.py``).
Throttling is logged once per episode and process: a WARNING when it starts (``<service> is
throttling (503 ServerBusy): requests are retried with ...``) and an INFO line with the counts once
the service has answered normally for 30 s; ``throttling.THROTTLES`` counts throttled answers by
service and kind. ``flowcraft_celery.devtools.faultproxy`` injects these answers in front of
Azurite for tests.

Request costs
=============

A task costs one send, one delete and 1/batch of a receive (about 2.06 Azure requests with a
prefetch of 32 or more, 2.13-2.25 at Celery's default prefetch, see ``bench/``), plus one Redis
script call with ``redis_url``; sent in bundles of 4, about a quarter of that (0.66 per node in
a 100-wide fan-out), plus one Redis command per acked part. An idle consumed queue costs
1/``max_polling_interval`` Azure requests per second (0.125 with the defaults), plus a listing
of the binding table each ``queue_heartbeat_interval``; with Redis, control and event traffic
costs no Azure request.
``transports.azurequeue.STATS`` counts every Azure request of the process by kind.

Structure
=========

``Transport`` (one per connection) owns the I/O thread, the lease keeper and the routing table,
and ``Transport.backend(queue)`` is the one place that says where a queue lives: an Azure queue
(``queues.AzureQueues``) or a transient queue in Redis (``transient.TransientQueues``), both
``backend.QueueBackend``; ``accounts.Accounts`` says which storage account holds an Azure queue.
``Channel`` declares, binds, publishes and settles through the
transport (ack, requeue, reject by delivery tag). ``redisside.RedisSide`` holds the connection's
Redis clients and the one Redis key schema (``RedisKeys``). ``keptalive`` holds the per-thread
kept-alive HTTP connections of requests made beside an SDK (the transport's signed queue requests,
and the app's signed Cosmos DB creates). The public API is ``__all__`` below; every other module
is internal.
"""

from . import keptalive, wire
from .accounts import AccountError, Accounts, account_entries, account_problem, shard_index, shard_queue_name
from .auth import Secret, build_clients, masked_url
from .blobs import LargeBodyStore
from .bundles import bundled
from .channel import Channel
from .directsession import DirectSession
from .errors import AzureQueueError
from .httpenv import HttpEnvironment
from .naming import (
    DEAD_LETTER_SUFFIX,
    QUEUE_NAME_RULE,
    azure_queue_name,
    dead_letter_queue_name,
    listing_prefix,
    prefix_problem,
    queue_problem,
)
from .options import Options
from .outages import OUTAGES, unanswered
from .redisauth import RedisCredentialError, redis_from_url
from .redisside import RedisKeys
from .registry import QueueRecord, namespace_queues, namespace_tag
from .standaside import StandAside
from .stats import STATS, blob_operation, queue_operation
from .throttling import THROTTLES, ThrottleWatch, cosmos_throttle_kind
from .transient import TransientQueues
from .transport import BrokerUnreachable, Transport

#: The public API; everything else in the package is internal and may change.
__all__ = [
    "DEAD_LETTER_SUFFIX",
    "OUTAGES",
    "QUEUE_NAME_RULE",
    "STATS",
    "THROTTLES",
    "AccountError",
    "Accounts",
    "AzureQueueError",
    "BrokerUnreachable",
    "Channel",
    "DirectSession",
    "HttpEnvironment",
    "LargeBodyStore",
    "Options",
    "QueueRecord",
    "RedisCredentialError",
    "RedisKeys",
    "Secret",
    "StandAside",
    "ThrottleWatch",
    "TransientQueues",
    "Transport",
    "account_entries",
    "account_problem",
    "azure_queue_name",
    "blob_operation",
    "build_clients",
    "bundled",
    "cosmos_throttle_kind",
    "dead_letter_queue_name",
    "keptalive",
    "listing_prefix",
    "masked_url",
    "namespace_queues",
    "namespace_tag",
    "prefix_problem",
    "queue_operation",
    "queue_problem",
    "redis_from_url",
    "shard_index",
    "shard_queue_name",
    "unanswered",
    "wire",
]
