"""Celery result backend `cosmos://` on Azure Cosmos DB (azure-cosmos 4.x).

Replaces Celery's `cosmosdbsql` backend (built on the retired `pydocumentdb`). One item per
key, `{id: <celery key>, value: <encoded meta>, ttl: <seconds>}`, in a container partitioned by
`/id` (created when missing, per-item TTL enabled), so `result_expires` needs no cleanup job.
Storing never reads first: Celery's "a SUCCESS is never overwritten" holds atomically (a create,
or an ETag-conditional replace of an item whose state is not SUCCESS), and polls never read an
item that does not exist yet: `result_index` marks in Redis which result keys exist.
Chords join natively in Redis, exactly as Celery's Redis backend joins them (each header task's
result goes to a Redis list with one script call; the part that completes the chord publishes
the callback with the header's results, no `chord_unlock` polling, nested chords included).

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
import contextlib
import math
import os
import threading
from typing import Any
from urllib.parse import quote, unquote

from azure.core import MatchConditions
from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.cosmos import ContainerProxy
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosHttpResponseError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)
from celery import states
from celery.backends.base import KeyValueStoreBackend
from celery.exceptions import BackendStoreError, ImproperlyConfigured
from celery.result import GroupResult
from celery.utils.functional import _regen
from kombu.utils.encoding import bytes_to_str

from flowcraft_celery.backends.node_results import NodeResults, is_node_task
from flowcraft_celery.backends.result_index import Known, ResultIndex
from flowcraft_celery.settings import Settings
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

#: Results are only ever read by id: index nothing.
RESULTS_INDEXING: dict[str, Any] = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [],
    "excludedPaths": [{"path": "/*"}],
}
#: Status codes worth retrying a backend operation for (timeouts, throttling, unavailable).
_RETRYABLE_STATUS = frozenset({408, 429, 449, 503})
#: Conditional writes a store tries before giving up (each lost race means another writer won).
STORE_ATTEMPTS = 10


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
    #: Chords join in Redis (`on_chord_part_return`), not through Celery's incr-and-poll join.
    implements_incr = False
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
        settings = Settings.from_conf(conf)
        self._database = settings.cosmos_database
        self._container_name = settings.cosmos_results_container
        self._container_lock = threading.Lock()
        self._container_by_pid: tuple[int, ContainerProxy] | None = None
        self._redis_url = settings.redis_url
        prefix = settings.key_prefix
        self.node_results = NodeResults(self._redis_url, prefix, self.expires)
        self.index = ResultIndex(self._redis_url, prefix, self.expires)
        self._joiner: tuple[int, Any] | None = None

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
        """Store a task's result unless a SUCCESS is stored already (atomically, without reading
        first); a node task's goes to Redis (`node_results`), not to Cosmos."""
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = bytes_to_str(task_id)
        if is_node_task(request):
            self.node_results.set(self.get_key_for_task(task_id), self.encode(meta))
            return result
        try:
            self._store_unless_success(self.get_key_for_task(task_id), self.encode(meta), state)
        except BackendStoreError as exc:
            raise BackendStoreError(str(exc), state=state, task_id=task_id) from exc
        return result

    def _store_unless_success(self, key: Any, value: Any, state: str) -> None:
        """Create the item, or replace it (ETag-conditional) unless its state is SUCCESS."""
        id_ = self._id(key)
        item = self._item(id_, value, self.expires)
        item["state"] = state
        exists = self.index.lookup(key) is Known.PRESENT
        self.index.present(key)
        for _ in range(STORE_ATTEMPTS):
            if not exists:
                try:
                    self.container.create_item(item)
                    return
                except CosmosResourceExistsError:
                    exists = True
            current = read_item_or_none(self.container, id_, id_)
            if current is None:
                exists = False
                continue
            if self._state_of(current) == states.SUCCESS:
                return
            try:
                self.container.replace_item(id_, item, etag=current.get("_etag"),
                                            match_condition=MatchConditions.IfNotModified)
                return
            except CosmosAccessConditionFailedError:
                continue
        raise BackendStoreError(f"result {id_} kept changing while being stored ({STORE_ATTEMPTS} attempts)")

    def _state_of(self, item: dict[str, Any]) -> str | None:
        """The Celery state of a stored result item (items written before `state` was kept: decoded)."""
        if item.get("state"):
            return str(item["state"])
        try:
            meta = self.decode(base64.b64decode(item["value_b64"]) if "value_b64" in item else item.get("value"))
        except Exception:  # an unreadable old value: never let it block a store
            return None
        return meta.get("status") if isinstance(meta, dict) else None

    def get(self, key: Any) -> Any:
        """The stored value for `key`, or None (also once its TTL has passed); a task result
        Cosmos does not have may be a node task's, in Redis."""
        known = self.index.lookup(key)
        item = None if known is Known.ABSENT else read_item_or_none(self.container, self._id(key), self._id(key))
        if item is None and known is Known.UNKNOWN:
            self.index.absent(key)
        if item is None and bytes_to_str(key).startswith(bytes_to_str(self.task_keyprefix)):
            return self.node_results.get(key)
        if item is None or expired(item):
            return None
        if "value_b64" in item:
            return base64.b64decode(item["value_b64"])
        return item.get("value")

    def wait_for(self, task_id: Any, timeout: float | None = None, interval: float = 0.5, no_ack: bool = True,
                 on_interval: Any = None) -> Any:
        """Poll until the task is ready; a failure is checked against the parents first, as with
        Celery's Redis backend, whose pub/sub client hears of a failed parent (a chord header's
        chain) before the body's ChordError: `get()` then raises the parent's own exception."""
        meta = super().wait_for(task_id, timeout=timeout, interval=interval, no_ack=no_ack, on_interval=on_interval)
        if on_interval is not None and meta.get("status") in states.PROPAGATE_STATES:
            on_interval()
        return meta

    def mget(self, keys: list[Any]) -> list[Any]:
        """Values for several keys (None where missing), in order."""
        return [self.get(key) for key in keys]

    def set(self, key: Any, value: Any) -> None:
        """Store `value` under `key` with the result TTL: one upsert."""
        item = self._item(self._id(key), value, self.expires)
        self.index.present(key)
        self.container.upsert_item(item)

    @staticmethod
    def _item(id_: str, value: Any, expires: Any) -> dict[str, Any]:
        """The Cosmos item holding `value` (BackendStoreError when over the item size limit)."""
        item: dict[str, Any] = {"id": id_}
        if isinstance(value, bytes | bytearray | memoryview):
            item["value_b64"] = base64.b64encode(bytes(value)).decode("ascii")
        else:
            item["value"] = value
        ttl = _ttl(expires)
        if ttl:
            item["ttl"] = ttl
        size = json_size(item)
        if size > MAX_ITEM_BYTES:
            raise BackendStoreError(
                f"value for {id_} is {size} bytes, over Cosmos DB's item limit of "
                f"{MAX_ITEM_BYTES} bytes"
            )
        return item

    def delete(self, key: Any) -> None:
        """Delete `key` (no error when absent)."""
        with contextlib.suppress(CosmosResourceNotFoundError):
            self.container.delete_item(self._id(key), partition_key=self._id(key))
        self.index.forget(key)

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

    # Chords: joined in Redis by Celery's own Redis backend code --------------------------------

    @property
    def joiner(self) -> Any:
        """This process's Celery Redis backend on `flowcraft_redis_url`, used for chord joins only."""
        if self._joiner is None or self._joiner[0] != os.getpid():
            from celery.backends.redis import RedisBackend

            self._joiner = (os.getpid(), RedisBackend(app=self.app, url=self._redis_url))
        return self._joiner[1]

    def set_chord_size(self, group_id: str, chord_size: int) -> None:
        """Record the chord's size (a re-applied frozen chord reuses its group id: starts over)."""
        self.joiner.set_chord_size(group_id, chord_size)

    def apply_chord(self, header_result_args: Any, body: Any, **kwargs: Any) -> None:
        """Save a header that holds groups, so the join can give the body their structure (in
        Cosmos, where `GroupResult.restore` looks); a flat header needs nothing."""
        self.ensure_chords_allowed()
        group_key = self.get_key_for_group(header_result_args[0])
        if not isinstance(header_result_args[1], _regen):
            header_result = self.app.GroupResult(*header_result_args)
            if any(isinstance(result, GroupResult) for result in header_result.results):
                self.set(group_key, self.encode({"result": header_result.as_tuple()}))
                return
        self.index.absent(group_key)

    def on_chord_part_return(self, request: Any, state: str, result: Any, **kwargs: Any) -> None:
        """Count a header part in Redis; the last one publishes the body (Celery's Redis join)."""
        self.joiner.on_chord_part_return(request, state, result, **kwargs)

    @staticmethod
    def _id(key: Any) -> str:
        """The item id of a Celery key (characters Cosmos forbids in ids are escaped)."""
        return quote(bytes_to_str(key), safe="-_.:;@!$&'()*+,=~ ")


def _ttl(seconds: Any) -> int | None:
    """A Cosmos per-item TTL (whole seconds, at least 1) for `seconds`, or None for no expiry."""
    if not seconds or seconds <= 0:
        return None
    return max(1, math.ceil(seconds))
