"""Stores whose service failures surface as `InfrastructureError` naming the service and endpoint.

The distributed runtime wraps every Cosmos and Redis store in `guarded(...)`, so node code
calling `ctx.context.set` during a Cosmos outage, the bridge recording an output, and the
client starting a run all see the same kind of error: retried with back-off by the worker,
reported in one line by the client, never counted as a node attempt.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import kombu.exceptions
import redis.exceptions
from azure.core.exceptions import AzureError, HttpResponseError

from flowcraft_celery.stores.faults import InfrastructureError, PermanentError
from transports.azurequeue import OUTAGES, unanswered

T = TypeVar("T")

#: What a store or broker call raises when its service is down, slow or refusing for a while.
TRANSIENT: tuple[type[BaseException], ...] = (
    AzureError, redis.exceptions.RedisError, kombu.exceptions.OperationalError, OSError, TimeoutError,
)
#: HTTP statuses that mean the request itself is unacceptable (no retry can fix it).
_REFUSED_STATUSES = frozenset({413})


def translate(service: str, exc: BaseException) -> BaseException:
    """The error a store call's failure stands for: permanent, infrastructure, or itself."""
    if isinstance(exc, (PermanentError, InfrastructureError)):
        return exc
    if isinstance(exc, HttpResponseError) and exc.status_code in _REFUSED_STATUSES:
        return PermanentError(f"{service} refused the value: {str(exc).splitlines()[0] if str(exc) else exc}")
    if isinstance(exc, TRANSIENT):
        return InfrastructureError.wrap(service, exc)
    return exc


class _Guarded:
    """A proxy whose methods translate service failures (see `translate`)."""

    def __init__(self, store: Any, service: str) -> None:
        self._store = store
        self._service = service
        self._methods: dict[str, Callable[..., Any]] = {}

    def __getattr__(self, name: str) -> Any:
        known = self._methods.get(name)
        if known is not None:
            return known
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr
        service = self._service

        @functools.wraps(attr)
        def method(*args: Any, **kwargs: Any) -> Any:
            result = call(service, attr, *args, **kwargs)
            return _guard_iterator(service, result) if isinstance(result, Iterator) else result

        self._methods[name] = method
        return method

    def __repr__(self) -> str:
        return f"guarded({self._store!r}, {self._service!r})"


def _guard_iterator(service: str, items: Iterator[Any]) -> Iterator[Any]:
    """Iterate `items` (lazily paged: the service is asked while iterating), translating failures."""
    try:
        yield from items
    except Exception as exc:
        translated = _failed(service, exc)
        if translated is exc:
            raise
        raise translated from exc
    _answered(service)


def call(service: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`function(*args, **kwargs)` with its service failures translated (for constructors that connect)."""
    try:
        result = function(*args, **kwargs)
    except Exception as exc:
        translated = _failed(service, exc)
        if translated is exc:
            raise
        raise translated from exc
    if not isinstance(result, Iterator):  # a lazy result has not asked the service yet
        _answered(service)
    return result


def _answered(service: str) -> None:
    if OUTAGES.active:
        name, _, endpoint = service.partition(" at ")
        OUTAGES.answered(name, endpoint)


def _failed(service: str, exc: Exception) -> BaseException:
    """What a failed call raises; a service that did not answer is told to the outage log
    (`transports.azurequeue.outages`: one WARNING per outage and process)."""
    translated = translate(service, exc)
    if translated is exc:
        return exc
    name, _, endpoint = service.partition(" at ")
    if endpoint and unanswered(exc):
        OUTAGES.failed(name, endpoint, exc)
    return translated


def guarded(store: T, service: str) -> T:
    """`store` with its service failures translated; `service` names the endpoint in messages."""
    return cast(T, _Guarded(store, service))


def is_outage(exc: BaseException) -> bool:
    """Whether a failure is a service not answering, which the outage log tells once per outage
    and process (`transports.azurequeue.outages`), so what it caused needs no warning or traceback."""
    return unanswered(exc)


def log_level(exc: BaseException, level: int, during_outage: int = logging.INFO) -> int:
    """The level to log what a failure caused at: `during_outage` in an outage, else `level`."""
    return during_outage if is_outage(exc) else level
