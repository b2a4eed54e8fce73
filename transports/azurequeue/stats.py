"""Count the Azure requests a process makes, per service and operation, for tests and benchmarks."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, urlsplit

from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.core.pipeline.transport import RequestsTransport
from requests import Session
from requests.adapters import HTTPAdapter

from .directsession import DirectSession
from .httpenv import HttpEnvironment
from .outages import OUTAGES
from .throttling import ThrottleWatch, storage_throttle_kind

POOL_SIZE = 32


class RequestStats:
    """Thread-safe counters of HTTP requests keyed `<service>.<operation>`, e.g. `queue.send`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, key: str) -> None:
        """Count one request of kind `key`."""
        with self._lock:
            self._counts[key] += 1

    def snapshot(self) -> dict[str, int]:
        """Return a copy of all counters."""
        with self._lock:
            return dict(self._counts)

    def total(self, service: str = "queue") -> int:
        """Return the number of requests made to `service` so far."""
        with self._lock:
            return sum(n for key, n in self._counts.items() if key.startswith(f"{service}."))


#: Requests made by every transport of this process.
STATS = RequestStats()


def queue_operation(method: str, url: str) -> str:
    """Name the Queue Storage operation an HTTP request performs."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    segments = [s for s in parts.path.split("/") if s]
    comp = query.get("comp", [""])[0]
    if "messages" in segments:
        has_id = segments[-1] != "messages"
        if has_id:
            return {"DELETE": "delete", "PUT": "update"}.get(method, method.lower())
        if method == "GET":
            return "peek" if query.get("peekonly") else "receive"
        return {"POST": "send", "DELETE": "clear"}.get(method, method.lower())
    if comp == "list":
        return "list"
    if comp == "metadata":
        return "set_metadata" if method == "PUT" else "get_properties"
    return {"PUT": "create_queue", "DELETE": "delete_queue"}.get(method, method.lower())


def blob_operation(method: str, url: str) -> str:
    """Name the Blob Storage operation an HTTP request performs."""
    if "restype=container" in urlsplit(url).query:
        return f"container_{method.lower()}"
    return {"PUT": "upload", "GET": "download", "DELETE": "delete"}.get(method, method.lower())


def account_endpoint(url: str) -> str:
    """The account endpoint of a request URL: scheme and host, and the account of an emulator's
    path-style URL (`http://127.0.0.1:10001/devstoreaccount1`)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    path_style = host.replace(".", "").isdigit() or host == "localhost"
    account = parts.path.strip("/").split("/")[0] if path_style else ""
    return f"{parts.scheme}://{parts.netloc}" + (f"/{account}" if account else "")


class CountingTransport(RequestsTransport):
    """An azure-core requests transport that counts every HTTP attempt (retries included)."""

    def __init__(self, service: str, stats: RequestStats = STATS, watch: ThrottleWatch | None = None,
                 **kwargs: Any) -> None:
        super().__init__(session=DirectSession(), **kwargs)
        self._init_session(self.session)
        self._service = service
        self._stats = stats
        self._classify = queue_operation if service == "queue" else blob_operation
        self._name = "Azure Queue Storage" if service == "queue" else "Azure Blob Storage"
        self._watch = watch
        self._environment = HttpEnvironment()

    def _init_session(self, session: Session) -> None:
        """Configure the session like azure-core does, with a pool big enough for parallel acks,
        and the environment read once per endpoint (`httpenv`) instead of on every request."""
        super()._init_session(session)
        session.trust_env = False
        for adapter in session.adapters.values():
            if isinstance(adapter, HTTPAdapter):
                adapter.init_poolmanager(POOL_SIZE, POOL_SIZE)

    def send(self, request: Any, **kwargs: Any) -> Any:
        """Count the request, send it, and tell the outage log whether the service answered and
        the throttle watch how."""
        self._stats.add(f"{self._service}.{self._classify(request.method, request.url)}")
        if kwargs.get("proxies") is None:
            kwargs["proxies"] = self._environment.proxies(request.url)
        kwargs["connection_verify"] = self._environment.verify(
            kwargs.get("connection_verify", self.connection_config.verify))
        try:
            response = super().send(request, **kwargs)
        except (ServiceRequestError, ServiceResponseError) as exc:  # an outage, not throttling
            OUTAGES.failed(self._name, account_endpoint(request.url), exc)
            raise
        if OUTAGES.active:
            OUTAGES.answered(self._name, account_endpoint(request.url))
        if self._watch is None:
            return response
        kind = storage_throttle_kind(response.status_code, response.headers)
        if kind is None:
            self._watch.answered()
        else:
            self._watch.throttled(kind)
        return response
