"""Azure Queue Storage transport module for Kombu (``azurequeue://``).

At-least-once delivery over Azure Queue Storage, usable as Celery's broker.

Features
========
* Type: Virtual
* Supports Direct: Yes, across processes
* Supports Topic: Yes, across processes
* Supports Fanout: Yes, across processes (so ``celery inspect``/``control``, events, Flower work)
* Supports Priority: No
* Supports TTL: Yes (message ``expiration`` and queue ``x-message-ttl``)
* Acknowledgements: a received message stays invisible and is deleted on ack; its invisibility
  is extended while the consumer holds it; if the consumer dies it reappears after
  ``visibility_timeout``. ``reject(requeue=True)`` makes it visible at once,
  ``reject(requeue=False)`` moves it to the dead-letter queue ``<queue>-dlq``.
* Poison messages: undecodable bodies and messages delivered more than ``max_delivery_count``
  times go to ``<queue>-dlq`` with the reason in their ``x-dead-letter-*`` headers.
* Delayed delivery: a message with a Celery ``eta`` (countdown/ETA/retry) is sent with the
  queue's initial visibility, so it appears only when due (longer than 7 days: it hops).
* Large bodies: a message longer than ``large_message_threshold`` is stored in Blob Storage and
  the queue carries a reference; the blob is deleted on ack.
* Batching: receives up to 32 messages per request (bounded by the prefetch count), acks in
  parallel, backs off polling geometrically when idle.

Connection String
=================

.. code-block::

    azurequeue://                                     # connection string from the option
                                                      # ``connection_string`` or the environment
                                                      # variable AZURE_STORAGE_CONNECTION_STRING
    azurequeue://<ACCOUNT_KEY>@<ACCOUNT_URL>          # e.g. https://acct.queue.core.windows.net
    azurequeue://<SAS_TOKEN>@<ACCOUNT_URL>
    azurequeue://DefaultAzureCredential@<ACCOUNT_URL> # needs the ``identity`` extra

Credentials are masked in ``repr``, logs and ``celery report``. A connection string put in
``broker_transport_options`` should be wrapped in :class:`transports.azurequeue.auth.Secret`
so ``celery report`` masks it too (the environment variable needs nothing).

Transport Options
=================

* ``connection_string``: account connection string (default: ``AZURE_STORAGE_CONNECTION_STRING``).
* ``queue_name_prefix``: prepended to every queue name (default ``""``).
* ``visibility_timeout``: seconds a received message stays invisible, renewed while held
  (default 30).
* ``max_delivery_count``: deliveries after which a message is dead-lettered (default 5).
* ``polling_interval``: first wait after an empty poll, doubled per empty poll (default 0.1 s).
* ``max_polling_interval``: longest wait between polls of an idle queue (default 8 s: an idle
  queue costs 0.125 requests/s).
* ``max_messages_per_poll``: batch size of a receive, 1-32, also bounded by prefetch
  (default 32).
* ``large_message_threshold``: message text length above which the body goes to Blob Storage
  (default 61440; Azure's limit is 64 KiB).
* ``blob_container``: container for large bodies (default ``kombu-large-messages``).
* ``blob_account_url``: blob endpoint when the broker URL is an account URL whose host has no
  ``.queue.`` to replace (default: derived).
* ``binding_cache_seconds``: how long a process trusts its copy of the shared binding table
  before listing it again when publishing through an exchange (default 5 s).
* ``queue_heartbeat_interval``: how often a consumer marks its transient (auto-delete or
  expiring) queues alive; such a queue silent for 3 intervals is deleted by whoever lists the
  bindings (default 60 s).
* ``settle_threads``: threads that ack, requeue and dead-letter in parallel (default 8).

Polling and latency: Azure has no long polling, so an idle queue is polled at most every
``max_polling_interval`` seconds; the first message after a long idle time waits up to that
long (then polling is immediate while messages flow). ``celery inspect``/``control`` therefore
needs a ``--timeout`` of about 1.5 x ``max_polling_interval`` (``--timeout 12`` with the
defaults: the worker sees the request within 8 s, the caller's young reply queue is polled at
least every quarter of its age), and Flower ``--inspect_timeout=12000``.
Events reach a new receiver once publishers re-read the bindings (``binding_cache_seconds``).

Request costs: a task costs one send, one delete and 1/batch of a receive (about 2.06 requests
with a prefetch of 32 or more, see ``bench/transport_bench.py``); an idle queue about
1/``max_polling_interval`` requests per second. ``transports.azurequeue.stats.STATS`` counts
every request of the process by kind.
"""

from typing import Any

__all__ = ["Channel", "Transport"]


def __getattr__(name: str) -> Any:
    """Import the channel and transport classes on first use (importing the package stays light)."""
    if name == "Transport":
        from transports.azurequeue.transport import Transport

        return Transport
    if name == "Channel":
        from transports.azurequeue.channel import Channel

        return Channel
    raise AttributeError(name)
