"""The transport class of `azurequeue://`: one per Kombu connection; the package docstring is the manual."""

from __future__ import annotations

import logging
import math
import time
from functools import partial
from typing import Any

import redis
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from kombu.transport import virtual
from kombu.transport.virtual.exchange import TopicExchange

from .accounts import Accounts
from .auth import build_clients, masked_url
from .backend import QueueBackend
from .channel import Channel as AzureQueueChannel
from .errors import AzureQueueError
from .inbox import Inbox
from .leases import Lease, LeaseKeeper
from .options import Options
from .outages import OUTAGES, redis_endpoint, unanswered
from .polling import PollSchedule
from .queues import AzureQueues
from .receiver import MAX_WAIT, Consumption, Received, Receiver
from .redisside import RedisSide
from .registry import BindingRegistry, Route
from .transient import TransientQueues, is_transient
from .wakeup import WakeSignals

logger = logging.getLogger(__name__)

_TOPIC = TopicExchange(None)
#: Seconds a process reuses the Redis bindings of an exchange that also has Azure queues.
TRANSIENT_ROUTES_CACHE = 1.0
#: Longest time (seconds) a worker's event loop sleeps, so it notices a shutdown signal soon.
LOOP_TICK = 1.0
#: Longest wait (seconds) for the storage account's answer when a connection is established
#: (Kombu's `connect_timeout`, Celery's `broker_connection_timeout`, if shorter).
CONNECT_TIMEOUT = 5.0


class BrokerUnreachable(AzureQueueError, ConnectionError):
    """The storage account (or the Redis of `redis_url`) did not answer when connecting. `account`:
    the number of the storage account (0: the broker URL's, n: entry n of `storage_accounts`, None:
    Redis), `endpoint` its queue endpoint and `reason` what went wrong, for one-line reports."""

    def __init__(self, message: str, account: int | None = None, endpoint: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.account = account
        self.endpoint = endpoint
        self.reason = reason or message


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
        self._accounts: Accounts | None = None
        self._redis: RedisSide | None = None
        self.queues = AzureQueues(self.options, lambda: self.accounts, self.keeper, lambda: self.redis)
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
    def accounts(self) -> Accounts:
        """The storage accounts (the broker URL's and those of `storage_accounts`), built on first use."""
        if self._accounts is None:
            conninfo: Any = self.client
            self._accounts = Accounts.build(conninfo.hostname or "", dict(conninfo.transport_options or {}),
                                            build_clients)
        return self._accounts

    @property
    def registry(self) -> BindingRegistry:
        """The shared binding registry of the Azure queues."""
        return self.queues.registry

    @property
    def redis(self) -> RedisSide | None:
        """This connection's Redis side (None without the `redis_url` option), built on first use."""
        if self._redis is None and self.options.redis_url:
            self._redis = RedisSide(self.options)
        return self._redis

    @property
    def signals(self) -> WakeSignals | None:
        """Wake-up tokens over Redis (None without the `redis_url` option)."""
        return self.redis.signals if self.redis is not None else None

    @property
    def transient(self) -> TransientQueues | None:
        """Transient queues in Redis (None without the `redis_url` option)."""
        return self.redis.transient if self.redis is not None else None

    def establish_connection(self) -> Any:
        """Build the clients and check each account answers (one request each, no retry, a short
        timeout), and Redis when configured: a broker that is not there fails here, so Kombu's
        `ensure_connection` and Celery's connection retries see it."""
        self._check_reachable()
        return super().establish_connection()

    def _check_reachable(self) -> None:
        """Ask each account for one page of one queue name; PING Redis. Raise BrokerUnreachable."""
        conninfo: Any = self.client
        timeout = min(float(getattr(conninfo, "connect_timeout", None) or CONNECT_TIMEOUT), CONNECT_TIMEOUT)
        for number, service in self.accounts.queue_services():
            # the URL's account (masked), or the account's endpoint (never its SAS)
            where = masked_url(conninfo.hostname) if conninfo.hostname and number == 0 else self.accounts.where(number)
            self._check_account(service, number, where, timeout)
        if self.redis is not None:
            client = self.redis.client
            try:
                client.ping()
            except redis.RedisError as exc:
                if unanswered(exc):
                    OUTAGES.failed("Redis", redis_endpoint(client), exc)
                raise BrokerUnreachable(f"the Redis of the `redis_url` option does not answer: {exc}") from exc
            OUTAGES.answered("Redis", redis_endpoint(client))

    def _check_account(self, service: Any, number: int, where: str, timeout: float) -> None:
        """Ask account `number` for one page of one queue name. Raise BrokerUnreachable naming `where`."""
        endpoint = str(service.url).split("?", 1)[0].rstrip("/")
        try:
            pages = service.list_queues(
                name_starts_with=self.options.queue_name_prefix or None, results_per_page=1,
                connection_timeout=timeout, read_timeout=timeout, retry_total=0,
            ).by_page()
            next(pages, None)
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise BrokerUnreachable(f"the storage account of {where} does not answer: {exc}", number, endpoint,
                                    f"does not answer: {exc}") from exc
        except HttpResponseError as exc:
            # The account answered. A credential it refuses is a connection error (nothing will
            # work); a SAS without the service-level `list` permission is fine.
            if exc.status_code in (401, 403) and getattr(exc, "error_code", None) == "AuthenticationFailed":
                raise BrokerUnreachable(f"the storage account of {where} refuses the credential: {exc.message}",
                                        number, endpoint, "the credentials were refused") from exc
            if not getattr(exc, "error_code", None):  # no Azure error code: another server answers there
                raise BrokerUnreachable(f"{where} is not a storage account: it answers {exc.status_code} "
                                        f"{exc.reason}", number, endpoint,
                                        f"not a storage account: it answers {exc.status_code} {exc.reason}") from exc

    # Declarations and routing -------------------------------------------------------------

    def is_transient(self, queue: str) -> bool:
        """Tell whether `queue` lives in Redis (a transient queue, with Redis configured)."""
        return self.backend(queue) is not self.queues

    def backend(self, queue: str) -> QueueBackend:
        """Where `queue` lives: the one place that decides between Redis and Azure."""
        transient = self.transient
        if transient is not None and queue in self._transient_names:
            return transient
        return self.queues

    def declare_queue(self, queue: str, arguments: dict[str, Any], auto_delete: bool) -> None:
        """Create a queue: a transient one in Redis when configured, any other on Azure."""
        if is_transient(arguments, auto_delete):
            if self.transient is not None:
                self._transient_names.add(queue)
            else:
                self._expiring_azure.add(queue)
        self.backend(queue).declare(queue, arguments, auto_delete)

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
        """Send a Kombu payload to a queue; without signals, a local consumer polls at once."""
        self.backend(queue).put(queue, payload)
        if self._receiver is not None and self.redis is None and queue in self._consumed:
            self._receiver.wake(queue)

    def existing_queue_size(self, queue: str) -> int | None:
        """Message count of a queue, None when it does not exist (another process's transient
        queue is found in Redis)."""
        transient = self.transient
        if transient is not None and queue not in self._transient_names and transient.exists(queue):
            self._transient_names.add(queue)
        return self.backend(queue).existing_size(queue)

    def delete_queue(self, queue: str) -> None:
        """Delete a queue with its messages and bindings."""
        self._expiring_azure.discard(queue)
        self.backend(queue).delete(queue)

    # Settling -----------------------------------------------------------------------------

    def ack(self, tag: str) -> None:
        """Delete an acked message (a transient queue's message needs nothing)."""
        self.queues.ack(tag)

    def requeue(self, tag: str) -> bool:
        """Make a held message visible again at once; False when no message is held under `tag`."""
        return self.queues.requeue(tag)

    def reject(self, tag: str, reason: str) -> None:
        """Move a held message to its dead-letter queue with `reason`."""
        self.queues.reject(tag, reason)

    def give_back(self, payload: dict[str, Any]) -> None:
        """Make a received but undelivered message visible again at once."""
        self.queues.requeue(payload["properties"]["delivery_tag"])

    # Consuming ----------------------------------------------------------------------------

    def consume(self, queue: str, channel: AzureQueueChannel, no_ack: bool) -> None:
        """Start receiving `queue` for `channel` on the I/O thread."""
        consumption = Consumption(channel, channel.qos, self.is_transient(queue), no_ack)
        self._consumed = {**self._consumed, queue: consumption}
        if consumption.transient:
            self._receiving().wake_transient()
        else:
            self._receiving().wake(queue)

    def cancel(self, queue: str) -> None:
        """Stop receiving `queue`."""
        gone = self._consumed.get(queue)
        self._consumed = {q: c for q, c in self._consumed.items() if q != queue}
        if self._receiver is not None:
            self._receiver.forget(queue)
            if gone is not None and gone.transient:
                self._receiver.wake_transient()
            elif gone is not None:
                self._receiver.wake()  # its wait must not pop that queue's tokens any more

    def room_opened(self, channel: AzureQueueChannel) -> None:
        """A channel acked or rejected: let the I/O thread receive for it again."""
        if self._receiver is not None:
            self._receiver.room_opened(channel)

    def consumption(self) -> dict[str, Consumption]:
        """The queues consumed now (a snapshot, read by the I/O thread)."""
        return self._consumed

    def receive_batch(self, queue: str, count: int, no_ack: bool) -> tuple[int, list[Received]]:
        """Receive up to `count` messages of an Azure queue and hold them all (I/O thread)."""
        received, held = self.queues.receive_batch(queue, count, no_ack)
        return received, [Received(*accepted) for accepted in held]

    def return_undelivered(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send back the bundle parts among `payloads`, received beyond the consumer's room and
        never delivered: the parts of one bundle go back together as one new Azure message
        (in the background), visible at once to any worker. Returns the other payloads (whole
        messages), which the caller delivers."""
        kept: list[dict[str, Any]] = []
        returned: dict[int, tuple[Lease, list[str]]] = {}
        for payload in payloads:
            tag = payload["properties"]["delivery_tag"]
            lease = self.keeper.get(tag)
            if lease is None or not lease.bundle or self.keeper.take(tag) is None:
                kept.append(payload)
                continue
            returned.setdefault(id(lease), (lease, []))[1].append(tag)
        for lease, tags in returned.values():
            self.keeper.run_later(partial(self.queues.return_parts, lease, tags))
        return kept

    def transient_upkeep(self, now: float) -> float | None:
        """Keep this process's transient queues in Redis alive (the transient queues' thread);
        return the seconds until the next keep-alive is due (None: no transient queue)."""
        transient = self.transient
        ttl = transient.min_ttl() if transient is not None else None
        if transient is None or ttl is None:
            return None
        if now - self._last_keepalive >= ttl / 3:
            self._last_keepalive = now
            transient.keepalive()
        return self._last_keepalive + ttl / 3 - now

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
                blocking=self.redis.blocking_client(MAX_WAIT) if self.redis is not None else None,
                bundle_size=self.options.bundle_size if signals is not None else 1,
            )
            self._receiver.start()
        return self._receiver

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
        items = self.inbox.take_all()
        try:
            for queue, payload, _ in items:
                self._deliver(payload, queue)
        finally:
            self.inbox.delivered(items)

    def drain_events(self, connection: Any, timeout: float | None = None, **kwargs: Any) -> None:
        """Deliver what the I/O thread received, waiting up to `timeout` seconds for something."""
        self._receiving()
        ready = self.inbox.wait(timeout)
        if not ready:
            raise TimeoutError()
        try:
            for queue, payload, _ in ready:
                self._deliver(payload, queue)
        finally:
            self.inbox.delivered(ready)

    def close_connection(self, connection: Any) -> None:
        """Stop receiving, give back what was received but not delivered, close channels (giving
        unacked messages back), delete this connection's expiring queues, finish settlements."""
        if self._redis is not None:
            self._redis.signals.flush()
        if self._receiver is not None:
            for payload in self._receiver.stop():
                self.give_back(payload)
            self._receiver = None
        left = self.inbox.take_all()
        for _, payload, _ in left:
            self.give_back(payload)
        self.inbox.delivered(left)
        if self._loop is not None:
            self.unregister_from_event_loop(connection, self._loop)
        super().close_connection(connection)
        for queue in list(self._expiring_azure):
            self.delete_queue(queue)
        if self._redis is not None:
            try:
                self._redis.transient.delete_owned()
            except redis.RedisError as exc:
                logger.warning("Could not delete this connection's queues in Redis: %r", exc)
        self._consumed = {}
        self.keeper.close()
