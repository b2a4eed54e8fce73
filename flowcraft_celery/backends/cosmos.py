"""Celery result backend `cosmos://` on Azure Cosmos DB (azure-cosmos 4.x).

Replaces Celery's `cosmosdbsql` backend (built on the retired `pydocumentdb`). One item per
key, `{id: <celery key>, value: <encoded meta>, ttl: <seconds>}`, in a container partitioned by
`/id` (created when missing, per-item TTL enabled), so `result_expires` needs no cleanup job.
Chords join without `chord_unlock` polling: each header task's return bumps a counter item
with one atomic patch `incr`, and the part that brings it to the chord size runs the callback.

URL: bare `cosmos://` reads `AZURE_COSMOS_CONNECTION_STRING`; `cosmos://:<key>@<host>:<port>`
names the account directly (https), the key pasted as the Azure portal shows it (base64: `/`, `+`
and `=` need no escaping; a percent-encoded key works too). For example, the Cosmos DB emulator's
published key, pasted as is (`CELERY_RESULT_BACKEND` or `result_backend`)::

    cosmos://:C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU9DDJf5/2oMqLl6JVXUEHnCYqC7gsXzlzUm7xzy2Pp1FHpWw==@localhost:8081

Settings: `cosmos_database` (`flowcraft`),
`cosmos_results_container` (`celery_results`), `cosmos_verify_tls` (default on; the
environment variable `FLOWCRAFT_COSMOS_VERIFY_TLS=false` turns it off for the emulator).
"""

from __future__ import annotations

import base64
import math
import os
import threading
from typing import Any
from urllib.parse import quote, unquote

from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.cosmos import ContainerProxy
from azure.cosmos.exceptions import (
    CosmosHttpResponseError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)
from celery.backends.base import KeyValueStoreBackend
from celery.exceptions import BackendStoreError, ImproperlyConfigured
from kombu.utils.encoding import bytes_to_str

from flowcraft_celery.backends.node_results import NodeResults, is_node_task
from flowcraft_celery.stores.cosmos import MAX_ITEM_BYTES, expired, json_size
from flowcraft_celery.stores.cosmos_client import (
    CosmosConfigError,
    connection_string_from_env,
    ensure_container,
    get_client,
    parse_connection_string,
    parse_verify_flag,
    read_item_or_none,
    verify_tls_from_env,
)

DEFAULT_DATABASE = "flowcraft"
DEFAULT_CONTAINER = "celery_results"

#: Results are only ever read by id: index nothing.
RESULTS_INDEXING: dict[str, Any] = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [],
    "excludedPaths": [{"path": "/*"}],
}
#: Status codes worth retrying a backend operation for (timeouts, throttling, unavailable).
_RETRYABLE_STATUS = frozenset({408, 429, 449, 503})


def split_url(url: str) -> tuple[str, str, int]:
    """(account key, host, port) of `cosmos://:<key>@<host>[:<port>]`.

    The key may be written as the Azure portal shows it (base64, with `/`, `+` and `=`) or
    percent-encoded; it ends at the last `@` (base64 has none)."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    credential, at, address = rest.rpartition("@")
    key = unquote(credential.split(":", 1)[1]) if ":" in credential else ""
    host, _, port = address.rstrip("/").partition(":")
    if not at or not key or not host or "/" in host or (port and not port.isdigit()):
        raise ImproperlyConfigured(
            f"result backend URL {mask_url(url)!r} is neither 'cosmos://' nor "
            "'cosmos://:<key>@<host>[:<port>]'"
        )
    return key, host, int(port or 443)


def mask_url(url: str) -> str:
    """The URL with the account key replaced by `**` (a raw base64 key included)."""
    scheme, sep, rest = url.partition("://")
    credential, at, address = rest.rpartition("@")
    if not at:
        return url
    user = credential.split(":", 1)[0]
    return f"{scheme}{sep}{user}:**@{address}"


def connection_string_from_url(url: str | None) -> str | None:
    """The connection string a `cosmos://` URL names, or None when it defers to the environment."""
    if not url or url.rstrip("/") in ("cosmos:", "cosmos:/"):
        return None
    key, host, port = split_url(url)
    return f"AccountEndpoint=https://{host}:{port}/;AccountKey={key};"


class CosmosBackend(KeyValueStoreBackend):
    """Celery results, groups and chord counters as Cosmos DB items with per-item TTL."""

    supports_autoexpire = True
    supports_native_join = False
    implements_incr = True
    key_t = str

    def __init__(self, app: Any = None, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app=app, url=url, **kwargs)
        conf = self.app.conf
        self.url = url
        try:
            conn_str = connection_string_from_url(url) or connection_string_from_env()
            parse_connection_string(conn_str)
            self._verify = parse_verify_flag(conf.get("cosmos_verify_tls"), verify_tls_from_env())
        except CosmosConfigError as exc:
            raise ImproperlyConfigured(str(exc)) from exc
        self._conn_str = conn_str
        self._database = conf.get("cosmos_database") or DEFAULT_DATABASE
        self._container_name = conf.get("cosmos_results_container") or DEFAULT_CONTAINER
        self._container_lock = threading.Lock()
        self._container_by_pid: tuple[int, ContainerProxy] | None = None
        self.node_results = NodeResults(str(conf.get("flowcraft_redis_url") or "redis://127.0.0.1:6379/0"),
                                        str(conf.get("flowcraft_key_prefix") or "flowcraft:"), self.expires)

    def __reduce__(self, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        """Pickle as (class, url, expires)."""
        return super().__reduce__(args, dict(kwargs or {}, url=self.url, expires=self.expires))

    def as_uri(self, include_password: bool = False) -> str:
        """The backend URL, with any account key masked unless asked for."""
        if not self.url or include_password:
            return self.url or "cosmos://"
        return mask_url(self.url)

    @property
    def container(self) -> ContainerProxy:
        """The results container of this process (database and container created when missing)."""
        pid = os.getpid()
        with self._container_lock:
            if self._container_by_pid is None or self._container_by_pid[0] != pid:
                client = get_client(self._conn_str, self._verify)
                container = ensure_container(
                    client, self._database, self._container_name, "/id",
                    indexing_policy=RESULTS_INDEXING, default_ttl=-1,
                )
                self._container_by_pid = (pid, container)
            return self._container_by_pid[1]

    def exception_safe_to_retry(self, exc: BaseException) -> bool:
        """Connection failures, timeouts and throttling are retried (`result_backend_always_retry`)."""
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            return True
        return isinstance(exc, CosmosHttpResponseError) and exc.status_code in _RETRYABLE_STATUS

    def _store_result(self, task_id: Any, result: Any, state: str, traceback: Any = None, request: Any = None,
                      **kwargs: Any) -> Any:
        """Store a task's result; a node task's goes to Redis (`node_results`), not to Cosmos."""
        if not is_node_task(request):
            return super()._store_result(task_id, result, state, traceback, request, **kwargs)
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = bytes_to_str(task_id)
        self.node_results.set(self.get_key_for_task(task_id), self.encode(meta))
        return result

    def get(self, key: Any) -> Any:
        """The stored value for `key`, or None (also once its TTL has passed); a task result
        Cosmos does not have may be a node task's, in Redis."""
        item = read_item_or_none(self.container, self._id(key), self._id(key))
        if item is None and bytes_to_str(key).startswith(bytes_to_str(self.task_keyprefix)):
            return self.node_results.get(key)
        if item is None or expired(item):
            return None
        if "value_b64" in item:
            return base64.b64decode(item["value_b64"])
        return item.get("value")

    def mget(self, keys: list[Any]) -> list[Any]:
        """Values for several keys (None where missing), in order."""
        return [self.get(key) for key in keys]

    def set(self, key: Any, value: Any) -> None:
        """Store `value` under `key` with the result TTL: one upsert."""
        id_ = self._id(key)
        item: dict[str, Any] = {"id": id_}
        if isinstance(value, bytes | bytearray | memoryview):
            item["value_b64"] = base64.b64encode(bytes(value)).decode("ascii")
        else:
            item["value"] = value
        ttl = _ttl(self.expires)
        if ttl:
            item["ttl"] = ttl
        size = json_size(item)
        if size > MAX_ITEM_BYTES:
            raise BackendStoreError(
                f"value for {id_} is {size} bytes, over Cosmos DB's item limit of "
                f"{MAX_ITEM_BYTES} bytes"
            )
        self.container.upsert_item(item)

    def delete(self, key: Any) -> None:
        """Delete `key` (no error when absent)."""
        try:
            self.container.delete_item(self._id(key), partition_key=self._id(key))
        except CosmosResourceNotFoundError:
            return

    def incr(self, key: Any) -> int:
        """Atomically add one to the counter under `key` (created at 1) and return the new count."""
        id_ = self._id(key)
        ops = [{"op": "incr", "path": "/count", "value": 1}]
        while True:
            try:
                item = self.container.patch_item(id_, id_, ops)
                return int(item["count"])
            except CosmosResourceNotFoundError:
                pass
            counter: dict[str, Any] = {"id": id_, "count": 1}
            ttl = _ttl(self.chord_expires)
            if ttl:
                counter["ttl"] = ttl
            try:
                self.container.create_item(counter)
                return 1
            except CosmosResourceExistsError:
                continue

    def expire(self, key: Any, value: Any) -> None:
        """Give `key` a new lifetime of `value` seconds (falsy: keep for ever)."""
        ttl = _ttl(value) or -1
        try:
            self.container.patch_item(
                self._id(key), self._id(key), [{"op": "set", "path": "/ttl", "value": ttl}]
            )
        except CosmosResourceNotFoundError:
            return

    def set_chord_size(self, group_id: str, chord_size: int) -> None:
        """Reset the chord's counter: a re-applied frozen chord reuses its group id."""
        self.delete(self.get_key_for_chord(group_id))

    @staticmethod
    def _id(key: Any) -> str:
        """The item id of a Celery key (characters Cosmos forbids in ids are escaped)."""
        return quote(bytes_to_str(key), safe="-_.:;@!$&'()*+,=~ ")


def _ttl(seconds: Any) -> int | None:
    """A Cosmos per-item TTL (whole seconds, at least 1) for `seconds`, or None for no expiry."""
    if not seconds or seconds <= 0:
        return None
    return max(1, math.ceil(seconds))
