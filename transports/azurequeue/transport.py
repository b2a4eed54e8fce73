"""The transport class of `azurequeue://`: one per Kombu connection; the package docstring is the manual."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Hashable
from typing import Any

import redis
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from kombu.transport import virtual
from kombu.transport.virtual.exchange import TopicExchange

from .auth import Clients, build_clients, masked_url
from .blobs import LargeBodyStore
from .bundles import DoneParts
from .channel import Channel as AzureQueueChannel
from .errors import AzureQueueError
from .inbox import Inbox
from .leases import LeaseKeeper
from .options import Options
from .polling import PollSchedule
from .queues import AzureQueues
from .receiver import MAX_WAIT, Consumption, Received, Receiver
from .redisauth import redis_from_url
from .registry import BindingRegistry, Route
from .transient import TransientQueues, decode, is_transient, lifetime, message_ttl_ms
from .wakeup import WakeSignals

logger = logging.getLogger(__name__)

_TOPIC = TopicExchange(None)
#: Redis socket timeouts (seconds) for commands, and on top of a blocking wait: short, because
#: a send waits on its wake-up signal and Redis answers in well under a millisecond.
REDIS_TIMEOUT = 1.0
#: Seconds a process reuses the Redis bindings of an exchange that also has Azure queues.
TRANSIENT_ROUTES_CACHE = 1.0
#: Longest time (seconds) a worker's event loop sleeps, so it notices a shutdown signal soon.
LOOP_TICK = 1.0
#: Longest wait (seconds) for the storage account's answer when a connection is established
#: (Kombu's `connect_timeout`, Celery's `broker_connection_timeout`, if shorter).
CONNECT_TIMEOUT = 5.0


class BrokerUnreachable(AzureQueueError, ConnectionError):
    """The storage account (or the Redis of `redis_url`) did not answer when connecting."""


class Transport(virtual.Transport):
    """Azure Queue Storage transport: an I/O thread receives, the caller's loop delivers."""

    Channel = AzureQueueChannel

    can_parse_url = True
    default_port = None
    driver_type = "azurequeue"
    driver_name = "azure-storage-queue"
    connection_errors: tuple[Any, ...] = (
        *virtual.Transport.connection_errors,
        BrokerUnreachable,
        ServiceRequestError,
        ServiceResponseError,
        redis.ConnectionError,
    )
    channel_errors: tuple[Any, ...] = (*virtual.Transport.channel_errors, AzureError)

    implements = virtual.Transport.implements.extend(
        asynchronous=True,
        exchange_type=frozenset(["direct", "topic", "fanout"]),
        heartbeats=False,
    )

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.options = Options.from_transport_options(dict(client.transport_options or {}))
        self.keeper = LeaseKeeper(self.options.visibility_timeout, self.options.settle_threads)
        self.inbox = Inbox()
        self._clients: Clients | None = None
        self._redis: redis.Redis | None = None
        self._signals: WakeSignals | None = None
        self._transient: TransientQueues | None = None
        self._done_parts: DoneParts | None = None
        self.queues = AzureQueues(self.options, lambda: self.clients, self.keeper, lambda: self.signals,
                                  lambda: self.done_parts)
        self._receiver: Receiver | None = None
        self._consumed: dict[str, Consumption] = {}
        self._transient_names: set[str] = set()
        self._transient_routes: dict[str, tuple[float, list[tuple[str, str, str]]]] = {}
        self._expiring_azure: set[str] = set()
        self._loop: Any = None
        self._last_heartbeat = time.monotonic()
        self._last_keepalive = time.monotonic()

    @classmethod
    def as_uri(cls, uri: str, include_password: bool = False, mask: str = "**") -> str:
        """Return the broker URL with its credential masked."""
        return masked_url(uri, include_password, mask)

    def driver_version(self) -> str:
        """Return the version of azure-storage-queue."""
        from azure.storage.queue import __version__

        return str(__version__)

    @property
    def clients(self) -> Clients:
        """The Azure service clients, built on first use."""
        if self._clients is None:
            conninfo: Any = self.client
            self._clients = build_clients(conninfo.hostname or "", conninfo.transport_options)
        return self._clients

    @property
    def registry(self) -> BindingRegistry:
        """The shared binding registry of the Azure queues."""
        return self.queues.registry

    @property
    def blobs(self) -> LargeBodyStore:
        """Where large bodies go."""
        return self.queues.blobs

    @property
    def signals(self) -> WakeSignals | None:
        """Wake-up tokens over Redis (None without the `redis_url` option)."""
        if self._signals is None and self.options.redis_url:
            self._signals = WakeSignals(self._redis_client(), self.options.redis_namespace)
        return self._signals

    @property
    def done_parts(self) -> DoneParts | None:
        """The settled parts of bundles, in Redis (None without the `redis_url` option)."""
        if self._done_parts is None and self.options.redis_url:
            self._done_parts = DoneParts(self._redis_client(), self.options.redis_namespace)
        return self._done_parts

    @property
    def transient(self) -> TransientQueues | None:
        """Transient queues in Redis (None without the `redis_url` option)."""
        if self._transient is None and self.options.redis_url:
            self._transient = TransientQueues(
                self._redis_client(), self.options.redis_namespace, self.options.transient_max_length
            )
        return self._transient

    def _redis_client(self) -> redis.Redis:
        """The Redis client for commands (built on first use)."""
        if self._redis is None:
            self._redis = redis_from_url(
                str(self.options.redis_url), self.options.redis_credential, socket_timeout=REDIS_TIMEOUT,
                socket_connect_timeout=REDIS_TIMEOUT, decode_responses=True,
            )
        return self._redis

    def establish_connection(self) -> Any:
        """Build the clients and check the account answers (one request, no retry, a short
        timeout), and Redis when configured: a broker that is not there fails here, so Kombu's
        `ensure_connection` and Celery's connection retries see it."""
        self._clients = self.clients
        self._check_reachable()
        return super().establish_connection()

    def _check_reachable(self) -> None:
        """Ask the account for one page of one queue name; PING Redis. Raise BrokerUnreachable."""
        conninfo: Any = self.client
        timeout = min(float(getattr(conninfo, "connect_timeout", None) or CONNECT_TIMEOUT), CONNECT_TIMEOUT)
        where = masked_url(conninfo.hostname or "")
        try:
            pages = self.clients.queues.list_queues(
                name_starts_with=self.options.queue_name_prefix or None, results_per_page=1,
                connection_timeout=timeout, read_timeout=timeout, retry_total=0,
            ).by_page()
            next(pages, None)
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise BrokerUnreachable(f"the storage account of {where} does not answer: {exc}") from exc
        except HttpResponseError as exc:
            # The account answered. A credential it refuses is a connection error (nothing will
            # work); a SAS without the service-level `list` permission is fine.
            if exc.status_code in (401, 403) and getattr(exc, "error_code", None) == "AuthenticationFailed":
                raise BrokerUnreachable(f"the storage account of {where} refuses the credential: {exc.message}") \
                    from exc
        if self.options.redis_url:
            try:
                self._redis_client().ping()
            except redis.RedisError as exc:
                raise BrokerUnreachable(f"the Redis of the `redis_url` option does not answer: {exc}") from exc

    # Declarations and routing -------------------------------------------------------------

    def is_transient(self, queue: str) -> bool:
        """Tell whether `queue` lives in Redis (a transient queue, with Redis configured)."""
        return self.transient is not None and queue in self._transient_names

    def declare_queue(self, queue: str, arguments: dict[str, Any], auto_delete: bool) -> None:
        """Create a queue: a transient one in Redis when configured, any other on Azure."""
        transient = is_transient(arguments, auto_delete)
        if transient and self.transient is not None:
            self.transient.declare(queue, lifetime(arguments), message_ttl_ms(arguments))
            self._transient_names.add(queue)
            return
        if transient:
            self._expiring_azure.add(queue)
        self.queues.declare_queue(queue, arguments, auto_delete)

    def bind(self, queue: str, exchange: str, kind: str, routing_key: str) -> None:
        """Record a binding where every process finds it."""
        if self.is_transient(queue):
            assert self.transient is not None
            self.transient.bind(queue, exchange, kind, routing_key)
            return
        binding = (exchange, kind, routing_key)
        self.registry.bind(queue, binding, lambda bindings: bindings.add(binding))

    def unbind(self, queue: str, exchange: str, kind: str, routing_key: str) -> None:
        """Remove a binding where every process finds it."""
        if self.is_transient(queue):
            assert self.transient is not None
            self.transient.unbind(queue, exchange, kind, routing_key)
            return
        binding = (exchange, kind, routing_key)
        self.registry.bind(queue, binding, lambda bindings: bindings.discard(binding))

    def routes(self, exchange: str) -> list[Route]:
        """The routing table of `exchange` in every process: Azure queues' and Redis queues'.

        Redis is asked on every publish to an exchange without Azure queues (control, replies,
        events: a new reply queue must be found at once) and at most once a second for one
        with Azure queues (task exchanges: a publish costs no extra Redis round trip). An
        exchange with queues in Redis takes the Azure table as this process last read it, so
        control, replies and events never wait on an Azure request (the event loop sends them)."""
        if self.transient is None:
            return self.registry.routes(exchange)
        now = time.monotonic()
        table = self.registry.routes(exchange, max_age=math.inf)
        cached = self._transient_routes.get(exchange)
        if not table or cached is None or now - cached[0] > TRANSIENT_ROUTES_CACHE:
            cached = (now, self.transient.routes(exchange))
            self._transient_routes[exchange] = cached
        if not cached[1]:
            return self.registry.routes(exchange)
        for kind, key, queue in cached[1]:
            self._transient_names.add(queue)
            pattern = _TOPIC.key_to_pattern(key) if kind == "topic" else None
            table.append((key, pattern, queue))
        return table

    def exchange_type(self, exchange: str) -> str | None:
        """The type of an exchange this process has not declared, as its bindings record it."""
        kind = self.registry.exchange_type(exchange)
        if kind is None and self.transient is not None:
            kinds = {k for k, _, _ in self.transient.routes(exchange)}
            kind = kinds.pop() if kinds else None
        return kind

    def recheck_bindings(self, max_age: float) -> None:
        """Re-read the Azure binding table if it may have changed in the last `max_age` seconds."""
        self.registry.recheck(max_age)

    # Queues and messages ------------------------------------------------------------------

    def put(self, queue: str, payload: dict[str, Any]) -> None:
        """Send a Kombu payload to a queue (Redis for transient queues, else Azure)."""
        if self.is_transient(queue):
            assert self.transient is not None
            if not self.transient.put(queue, payload):
                logger.debug("Dropped a message for transient queue %r: it is gone", queue)
            return
        self.queues.send(queue, payload)
        if self._receiver is not None and self.signals is None and queue in self._consumed:
            self._receiver.wake(queue)

    def pop_transient(self, queue: str) -> dict[str, Any] | None:
        """Take one message of a transient queue, if any (basic_get); expired ones are dropped."""
        assert self.transient is not None
        while True:
            text = self._redis_client().lpop(self.transient.list_key(queue))
            if text is None:
                return None
            payload = decode(str(text))
            if payload is not None:
                return payload

    def existing_queue_size(self, queue: str) -> int:
        """Message count of a queue that must exist (ResourceNotFoundError otherwise)."""
        transient = self.transient
        if transient is not None and transient.exists(queue):
            self._transient_names.add(queue)
            return transient.size(queue)
        if self.is_transient(queue):
            raise ResourceNotFoundError(f"no transient queue {queue!r}")
        props = self.queues.queue_client(queue).get_queue_properties()
        return props.approximate_message_count or 0

    def queue_size(self, queue: str) -> int:
        """Approximate message count of a queue."""
        if self.is_transient(queue):
            assert self.transient is not None
            return self.transient.size(queue)
        return self.queues.size(queue)

    def purge_queue(self, queue: str) -> int:
        """Drop every message of a queue and return how many there were."""
        if self.is_transient(queue):
            assert self.transient is not None
            return self.transient.purge(queue)
        count = self.queues.size(queue)
        self.queues.queue_client(queue).clear_messages()
        return count

    def delete_queue(self, queue: str) -> None:
        """Delete a queue with its messages and bindings."""
        self._expiring_azure.discard(queue)
        if self.is_transient(queue):
            assert self.transient is not None
            self.transient.delete(queue)
            return
        self.queues.delete_queue(queue)

    # Consuming ----------------------------------------------------------------------------

    def consume(self, queue: str, channel: AzureQueueChannel) -> None:
        """Start receiving `queue` for `channel` on the I/O thread."""
        consumption = Consumption(channel, channel.qos, self.is_transient(queue))
        self._consumed = {**self._consumed, queue: consumption}
        if consumption.transient:
            self._receiving().wake_transient()
        else:
            self._receiving().wake(queue)

    def cancel(self, queue: str) -> None:
        """Stop receiving `queue`."""
        self._consumed = {q: c for q, c in self._consumed.items() if q != queue}
        if self._receiver is not None:
            self._receiver.forget(queue)

    def room_opened(self, channel: AzureQueueChannel) -> None:
        """A channel acked or rejected: let the I/O thread receive for it again."""
        if self._receiver is not None:
            self._receiver.room_opened(channel)

    def consumption(self) -> dict[str, Consumption]:
        """The queues consumed now (a snapshot, read by the I/O thread)."""
        return self._consumed

    def receive_batch(self, queue: str, owner: Hashable, count: int) -> tuple[int, list[Received]]:
        """Receive up to `count` messages of an Azure queue and hold them all (I/O thread)."""
        received = self.queues.receive(queue, count)
        no_ack = isinstance(owner, AzureQueueChannel) and queue in owner._noack_queues
        held: list[Received] = []
        for message in received:
            held.extend(Received(*accepted) for accepted in self.queues.accept(queue, message, no_ack))
        return len(received), held

    def give_back(self, payload: dict[str, Any]) -> None:
        """Make a received but undelivered message visible again at once."""
        tag = payload["properties"]["delivery_tag"]
        lease = self.keeper.take(tag)
        if lease is not None:
            self.queues.requeue(lease, tag)

    def transient_upkeep(self, now: float) -> None:
        """Keep this process's transient queues in Redis alive (the transient queues' thread)."""
        transient = self.transient
        ttl = transient.min_ttl() if transient is not None else None
        if transient is not None and ttl is not None and now - self._last_keepalive >= ttl / 3:
            self._last_keepalive = now
            transient.keepalive()

    def upkeep(self, now: float) -> None:
        """Periodic work of a consuming connection (I/O thread): queue heartbeats, reap abandoned
        Azure queues."""
        if now - self._last_heartbeat >= self.options.queue_heartbeat_interval:
            self._last_heartbeat = now
            consumed = [q for q, c in self._consumed.items() if not c.transient]
            self.registry.heartbeat(consumed)
            self.registry.refresh()

    def _receiving(self) -> Receiver:
        """The I/O thread of this connection, started on first use."""
        if self._receiver is None:
            signals = self.signals
            self._receiver = Receiver(
                self,
                self.inbox,
                PollSchedule(
                    self.options.polling_interval,
                    self.options.max_polling_interval,
                    signalled=signals is not None,
                ),
                self.options.max_messages_per_poll,
                self.options.gather_seconds,
                signals=signals,
                transient=self.transient,
                blocking=self._blocking_redis() if signals is not None else None,
                bundle_size=self.options.bundle_size if signals is not None else 1,
            )
            self._receiver.start()
        return self._receiver

    def _blocking_redis(self) -> redis.Redis:
        """A Redis client of the I/O thread alone, for its blocking waits."""
        return redis_from_url(
            str(self.options.redis_url), self.options.redis_credential, socket_timeout=MAX_WAIT + REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT, decode_responses=True,
        )

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        """Let a worker's event loop deliver: it watches the inbox and never waits on Azure."""
        self._loop = loop
        loop.add_reader(self.inbox.fileno(), self._deliver_ready)
        # The loop sleeps in poll() until a descriptor or timer fires: a 1 s timer makes it see
        # a shutdown signal (Celery checks for one between turns) within a second.
        loop.call_repeatedly(LOOP_TICK, self._deliver_ready)
        self._receiving()

    def unregister_from_event_loop(self, connection: Any, loop: Any) -> None:
        """Stop delivering from the event loop."""
        loop.remove_reader(self.inbox.fileno())
        self._loop = None

    def _deliver_ready(self, *args: Any) -> None:
        """Deliver everything the I/O thread has handed over (event loop callback)."""
        for queue, payload, _ in self.inbox.take_all():
            self._deliver(payload, queue)

    def drain_events(self, connection: Any, timeout: float | None = None, **kwargs: Any) -> None:
        """Deliver what the I/O thread received, waiting up to `timeout` seconds for something."""
        self._receiving()
        ready = self.inbox.wait(timeout)
        if not ready:
            raise TimeoutError()
        for queue, payload, _ in ready:
            self._deliver(payload, queue)

    def close_connection(self, connection: Any) -> None:
        """Stop receiving, give back what was received but not delivered, close channels (giving
        unacked messages back), delete this connection's expiring queues, finish settlements."""
        if self._signals is not None:
            self._signals.flush()
        if self._receiver is not None:
            for payload in self._receiver.stop():
                self.give_back(payload)
            self._receiver = None
        for _, payload, _ in self.inbox.take_all():
            self.give_back(payload)
        if self._loop is not None:
            self.unregister_from_event_loop(connection, self._loop)
        super().close_connection(connection)
        for queue in list(self._expiring_azure):
            self.delete_queue(queue)
        if self._transient is not None:
            try:
                self._transient.delete_owned()
            except redis.RedisError as exc:
                logger.warning("Could not delete this connection's queues in Redis: %r", exc)
        self._consumed = {}
        self.keeper.close()
