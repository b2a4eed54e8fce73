"""Each outage of a service told once per process: a WARNING when it stops answering, an INFO when
it answers again, never a traceback.

Whatever talks to a service reports here: `failed(service, endpoint, exc)` when a call found it
not answering (refused or reset connections, timeouts, 5xx), `answered(service, endpoint)` when
a call got an answer. Only the first failure after an answer and the first answer after a
failure are logged, so a worker retrying every second during a minute-long outage writes two
lines per service; the callers log their own retries at DEBUG.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

logger = logging.getLogger("flowcraft.outages")

#: Errors that mean the service did not answer at all.
_UNANSWERED: tuple[type[BaseException], ...] = (
    ServiceRequestError, ServiceResponseError, redis.ConnectionError, redis.TimeoutError, ConnectionRefusedError,
    ConnectionResetError, ConnectionAbortedError, BrokenPipeError, TimeoutError, socket.timeout,
)


def unanswered(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) says the service did not answer: a refused, reset or
    timed-out connection, or a 5xx status (throttling, 429 and 503 with a retry hint aside, is not)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _UNANSWERED):
            return True
        if isinstance(current, HttpResponseError) and current.status_code in (500, 502, 504):
            return True
        current = current.__cause__ or current.__context__
    return False


def shown(endpoint: str) -> str:
    """The endpoint as logs show it: no password, no query (a SAS)."""
    parts = urlsplit(endpoint)
    if not parts.scheme or not parts.hostname:
        return endpoint
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redis_endpoint(client: redis.Redis) -> str:
    """`redis://HOST:PORT/DB` of a client, without its password."""
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None) or {}
    scheme = "rediss" if kwargs.get("ssl") or "ssl_cert_reqs" in kwargs else "redis"
    return f"{scheme}://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def _key(service: str, endpoint: str) -> tuple[str, str]:
    parts = urlsplit(endpoint)
    return service, (f"{parts.hostname}:{parts.port}" if parts.hostname else endpoint)


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


class Outages:
    """The services this process found not answering, each since when."""

    def __init__(self) -> None:
        self._down: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._quiet = False

    def failed(self, service: str, endpoint: str, exc: BaseException) -> bool:
        """A call to `service` found it not answering; log a WARNING if it answered until now.
        True when this call began the outage."""
        key = _key(service, endpoint)
        with self._lock:
            if key in self._down:
                return False
            self._down[key] = time.monotonic()
        if self._quiet:
            return True
        logger.warning("%s at %s does not answer (%s); retrying until it does", service, shown(endpoint),
                       _reason(exc))
        return True

    def answered(self, service: str, endpoint: str) -> None:
        """A call to `service` got an answer; log an INFO if it was down."""
        if not self._down:  # the usual case: nothing to look up
            return
        with self._lock:
            began = self._down.pop(_key(service, endpoint), None)
        if began is not None:
            logger.info("%s at %s answers again (after %.0f s)", service, shown(endpoint), time.monotonic() - began)

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Record outages begun meanwhile without their WARNING: a start-up check that says in its own
        words which service does not answer; the INFO when it answers again still comes."""
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False

    @property
    def active(self) -> bool:
        """Whether any service is down as far as this process knows."""
        return bool(self._down)

    def down(self, service: str, endpoint: str) -> bool:
        """Whether the service is not answering as far as this process knows."""
        return _key(service, endpoint) in self._down

    def forget(self) -> None:
        """Know of no outage (a forked child starts its own account)."""
        self._down = {}
        self._lock = threading.Lock()


#: This process's account of outages.
OUTAGES = Outages()
os.register_at_fork(after_in_child=OUTAGES.forget)


def report(service: str, endpoint: str, exc: BaseException, log: logging.Logger, message: str,
           *args: Any) -> None:
    """Report a failed call: an outage to OUTAGES (the caller's own message goes to DEBUG), any
    other failure as the caller's ERROR."""
    if unanswered(exc):
        OUTAGES.failed(service, endpoint, exc)
        log.debug(message, *args)
    else:
        log.error(message, *args)
