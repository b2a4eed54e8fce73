"""The one place that builds Cosmos DB clients: connection strings, TLS, throttling retries, counts.

One `CosmosClient` per process and connection string, over a `requests` session that shares a
single `ssl.SSLContext` (the emulator closes every connection, so a fresh context and CA load per
request would cost ~20 ms each). Every HTTP request the SDK sends is counted by operation type
(`docs:read`, `docs:patch`, `docs:query`, `colls:read`, ...) so tests and benchmarks can check
what an operation costs.

Retries, configured deliberately (throttling is back-pressure, not failure):

* 429 (a partition past its RU/s): the SDK's throttle policy waits exactly the server's
  `x-ms-retry-after-ms` and tries again, up to `THROTTLE_RETRIES` times or
  `THROTTLE_MAX_WAIT_SECONDS` of waiting in all; only then does the error reach the caller, where
  `guard` makes it an `InfrastructureError` (retried later with back-off, never a node failure).
* 503 and 408: retried once by the SDK (408 for reads only: a write may have been applied), then an
  `InfrastructureError` like any outage.
* refused connections: retried `CONNECTION_RETRIES` times, `CONNECTION_BACKOFF` s apart (the SDK's
  default would wait 1 s); a connection reset after sending: the SDK retries reads, and this
  module's transport re-sends upserts (idempotent) up to `UPSERT_RESET_RETRIES` times, and
  `create_once` re-sends the creates whose repeat is harmless (an item written once, by whichever
  attempt lands first); any other write surfaces as an `InfrastructureError` (its outcome is unknown).

Every answer also goes to a `ThrottleWatch`: a WARNING when Cosmos DB starts throttling this
process and an INFO line with the counts when it stops (one pair per episode, not per request).
"""

from __future__ import annotations

import binascii
import os
import ssl
import threading
import time
from base64 import b64decode
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import urllib3
from azure.core.exceptions import ServiceResponseError
from azure.core.pipeline.transport import RequestsTransport
from azure.cosmos import ContainerProxy, CosmosClient, PartitionKey
from azure.cosmos.exceptions import (
    CosmosHttpResponseError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)
from requests.adapters import HTTPAdapter

from flowcraft_celery.errors import FlowcraftError
from transports.azurequeue import DirectSession, HttpEnvironment, ThrottleWatch, cosmos_throttle_kind

CONNECTION_STRING_ENV = "AZURE_COSMOS_CONNECTION_STRING"
VERIFY_TLS_ENV = "FLOWCRAFT_COSMOS_VERIFY_TLS"
#: Which TokenCredential a connection string without AccountKey uses: `DefaultAzureCredential` (the
#: default) or `module:attribute` naming a TokenCredential or a callable returning one.
CREDENTIAL_ENV = "FLOWCRAFT_COSMOS_CREDENTIAL"
DEFAULT_CREDENTIAL = "DefaultAzureCredential"

#: Throttling: how many 429 retries, and the longest total wait, before the error reaches us.
THROTTLE_RETRIES = 9
THROTTLE_MAX_WAIT_SECONDS = 30

#: Connection errors (reset, refused, timed out): retries and back-off of azure-core's retry policy.
CONNECTION_RETRIES = 5
CONNECTION_BACKOFF = 0.2
CONNECTION_BACKOFF_MAX = 4
#: Times an upsert whose connection was reset after sending is sent again by the transport.
UPSERT_RESET_RETRIES = 3


def create_once(container: ContainerProxy, item: dict[str, Any]) -> bool:
    """Create `item` unless an item with its id exists (False then). A create whose connection was
    reset before an answer is sent again (up to `UPSERT_RESET_RETRIES` times): it may have been
    applied, and the repeat then finds it, which means the same for an item that is written once."""
    for attempt in range(UPSERT_RESET_RETRIES + 1):
        try:
            container.create_item(item)
            return True
        except CosmosResourceExistsError:
            return False
        except ServiceResponseError:
            if attempt == UPSERT_RESET_RETRIES:
                raise
            time.sleep(CONNECTION_BACKOFF)
    return False


#: Tries at creating a database or container that other processes may be creating too.
_CREATE_ATTEMPTS = 5

#: Hosts for which the Cosmos SDK turns TLS verification off itself (the local emulator).
_SDK_UNVERIFIED_HOSTS = frozenset({"localhost", "127.0.0.1"})

_FALSE_WORDS = frozenset({"0", "false", "no", "off"})
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


class CosmosConfigError(FlowcraftError, ValueError):
    """A Cosmos connection string or setting is malformed; the message names the bad part."""


@dataclass(frozen=True)
class CosmosAccount:
    """The parts of a Cosmos connection string the client needs (no key: identity-based auth)."""

    endpoint: str
    key: str | None


def parse_connection_string(conn_str: str) -> CosmosAccount:
    """Parse `AccountEndpoint=...;AccountKey=...;` into its parts, naming any bad part; without
    `AccountKey` the account is reached with a TokenCredential (see `token_credential`)."""
    if not conn_str or not conn_str.strip():
        raise CosmosConfigError(
            f"Cosmos connection string is empty (set {CONNECTION_STRING_ENV} to "
            "'AccountEndpoint=https://...;AccountKey=...;')"
        )
    parts: dict[str, str] = {}
    for number, segment in enumerate(conn_str.strip().split(";"), start=1):
        if not segment.strip():
            continue
        name, sep, value = segment.partition("=")
        if not sep or not name.strip().isalnum():
            # never quote the segment: it may be (part of) the account key
            raise CosmosConfigError(
                f"Cosmos connection string segment {number} is not 'Name=value' "
                "(segments are separated by ';')"
            )
        parts[name.strip().lower()] = value.strip()
    endpoint = parts.get("accountendpoint")
    key = parts.get("accountkey")
    if not endpoint:
        raise CosmosConfigError("Cosmos connection string has no AccountEndpoint")
    if "accountkey" in parts and not key:
        raise CosmosConfigError("Cosmos connection string has an empty AccountKey (leave it out for "
                                "identity-based auth)")
    if key:
        try:
            b64decode(key, validate=True)
        except binascii.Error as exc:
            raise CosmosConfigError(
                f"Cosmos connection string AccountKey is not valid base64 ({exc})"
            ) from None
    url = urlparse(endpoint)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise CosmosConfigError(
            f"Cosmos connection string AccountEndpoint {endpoint!r} is not an http(s) URL"
        )
    return CosmosAccount(endpoint=endpoint, key=key or None)


def token_credential(spec: Any = None) -> Any:
    """The TokenCredential for identity-based auth: `spec` is a TokenCredential, `module:attribute`
    (a TokenCredential or a callable returning one), or empty / `DefaultAzureCredential`."""
    if spec is not None and not isinstance(spec, str):
        return spec() if isinstance(spec, type) or (callable(spec) and not hasattr(spec, "get_token")) else spec
    spec = (spec or os.environ.get(CREDENTIAL_ENV) or DEFAULT_CREDENTIAL).strip()
    if spec.lower() == DEFAULT_CREDENTIAL.lower():
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError as exc:
            raise CosmosConfigError(
                "Cosmos DB without AccountKey uses DefaultAzureCredential, which needs azure-identity: "
                "pip install 'flowcraft-celery[identity]'") from exc
        return DefaultAzureCredential()
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise CosmosConfigError(f"{CREDENTIAL_ENV} {spec!r} is neither DefaultAzureCredential nor module:attribute")
    import importlib

    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise CosmosConfigError(f"{CREDENTIAL_ENV} {spec!r} cannot be loaded: {exc}") from None
    return token_credential(found)


def parse_verify_flag(value: Any, default: bool = True) -> bool:
    """Read a TLS-verification setting (bool or `true/false/1/0/yes/no/on/off`)."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in _FALSE_WORDS:
        return False
    if word in _TRUE_WORDS:
        return True
    raise CosmosConfigError(
        f"{VERIFY_TLS_ENV} / cosmos_verify_tls value {value!r} is not a boolean"
    )


def verify_tls_from_env(default: bool = True) -> bool:
    """TLS verification as `FLOWCRAFT_COSMOS_VERIFY_TLS` says (on unless it says false)."""
    return parse_verify_flag(os.environ.get(VERIFY_TLS_ENV), default)


def connection_string_from_env() -> str:
    """The connection string from `AZURE_COSMOS_CONNECTION_STRING`, or a precise error."""
    value = os.environ.get(CONNECTION_STRING_ENV, "")
    if not value.strip():
        raise CosmosConfigError(f"{CONNECTION_STRING_ENV} is not set")
    return value


_counts: Counter[str] = Counter()
_counts_lock = threading.Lock()


def request_counts() -> dict[str, int]:
    """Cosmos HTTP requests sent by this process since the last reset, by operation type."""
    with _counts_lock:
        return dict(_counts)


def count_request(op: str) -> None:
    """Count one Cosmos HTTP request made beside the SDK (`docs:create`, ...)."""
    with _counts_lock:
        _counts[op] += 1


def reset_request_counts() -> None:
    """Zero the per-operation request counters."""
    with _counts_lock:
        _counts.clear()


def operation_of(method: str, path: str, headers: Any) -> str:
    """Name a Cosmos REST request `<resource>:<op>` from its method, path and headers."""
    segments = [s for s in path.split("/") if s]
    if not segments:
        return "account:read"
    odd = len(segments) % 2 == 1
    resource = segments[-1] if odd else segments[-2]
    method = method.upper()
    if method == "GET":
        op = "readfeed" if odd else "read"
    elif method == "POST":
        if str(headers.get("x-ms-documentdb-isquery", "")).lower() == "true":
            op = "query"
        elif str(headers.get("x-ms-cosmos-is-batch-request", "")).lower() == "true":
            op = "batch"
        elif str(headers.get("x-ms-documentdb-is-upsert", "")).lower() == "true":
            op = "upsert"
        else:
            op = "create"
    else:
        op = {"PUT": "replace", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())
    return f"{resource}:{op}"


class _SharedContextAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections all use one prepared `ssl.SSLContext`."""

    def __init__(self, context: ssl.SSLContext, verify: bool) -> None:
        self._context = context
        self._verify = verify
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """Hand the shared context to every pool."""
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Keep the CA store already loaded in the shared context instead of re-reading a bundle."""
        super().cert_verify(conn, url, verify, cert)
        if self._verify and verify is True:
            conn.ca_certs = None
            conn.ca_cert_dir = None
        if not self._verify:
            conn.cert_reqs = "CERT_NONE"


#: Cosmos DB throttling episodes of this process (logged once each).
COSMOS_WATCH = ThrottleWatch(
    "Cosmos DB", f"the server's x-ms-retry-after-ms (429, up to {THROTTLE_RETRIES} retries) or back-off")


class _CountingTransport(RequestsTransport):
    """The azure-core requests transport, counting each request by Cosmos operation type. Its
    session does not read the environment per request; the proxies the environment names for
    the account are looked up once (`HttpEnvironment`)."""

    _environment = HttpEnvironment()

    def send(self, request: Any, **kwargs: Any) -> Any:
        """Count, send, and tell the throttle watch how it was answered. An upsert whose connection
        was reset before an answer came is sent again here (it is idempotent; the SDK retries only
        reads after a reset), so a reset does not turn into a failed context write."""
        op = operation_of(request.method, urlparse(request.url).path, request.headers)
        if kwargs.get("proxies") is None:
            kwargs["proxies"] = self._environment.proxies(request.url)
        for attempt in range(UPSERT_RESET_RETRIES + 1):
            with _counts_lock:
                _counts[op] += 1
            try:
                response = super().send(request, **kwargs)  # a refused or reset connection is an outage
                break
            except ServiceResponseError:
                if op != "docs:upsert" or attempt == UPSERT_RESET_RETRIES:
                    raise
                time.sleep(CONNECTION_BACKOFF)
        kind = cosmos_throttle_kind(response.status_code, response.headers)
        if kind is None:
            COSMOS_WATCH.answered()
        else:
            COSMOS_WATCH.throttled(kind)
        return response


def tls_context(verify: bool, cafile: str | None = None) -> ssl.SSLContext:
    """One TLS context: system CAs (or `cafile`'s) and hostname checks, or none of that for the emulator."""
    context = ssl.create_default_context(cafile=cafile if verify else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _build_client(account: CosmosAccount, verify: bool, credential: Any = None) -> CosmosClient:
    """A new CosmosClient over a counting transport with a shared TLS context (the account key, or
    `credential` when the account has none)."""
    if not verify:
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    session = DirectSession()
    adapter = _SharedContextAdapter(tls_context(verify), verify)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    transport = _CountingTransport(session=session, session_owner=False)
    return CosmosClient(
        account.endpoint,
        credential=account.key or token_credential(credential),
        transport=transport,
        connection_verify=verify,
        retry_throttle_total=THROTTLE_RETRIES,
        retry_throttle_backoff_max=THROTTLE_MAX_WAIT_SECONDS,
        retry_total=CONNECTION_RETRIES,
        retry_backoff_factor=CONNECTION_BACKOFF,
        retry_backoff_max=CONNECTION_BACKOFF_MAX,
        enable_compact_utf8_item_writes=True,
    )


_clients: dict[tuple[int, str, bool], CosmosClient] = {}
_clients_lock = threading.Lock()


def get_client(conn_str: str | None = None, verify_tls: bool | None = None, credential: Any = None) -> CosmosClient:
    """The process's CosmosClient for this connection string (env defaults), built once; without
    AccountKey it authenticates with `credential` (see `token_credential`; FLOWCRAFT_COSMOS_CREDENTIAL)."""
    if conn_str is None:
        conn_str = connection_string_from_env()
    account = parse_connection_string(conn_str)
    verify = verify_tls_from_env() if verify_tls is None else verify_tls
    if urlparse(account.endpoint).hostname in _SDK_UNVERIFIED_HOSTS:
        verify = False  # the SDK never verifies these; a verifying TLS context would refuse its requests
    who = account.key or f"credential:{credential if isinstance(credential, str) else id(credential)}"
    key = (os.getpid(), account.endpoint + ";" + who, verify)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _build_client(account, verify, credential)
            _clients[key] = client
        return client


def ensure_container(
    client: CosmosClient,
    database: str,
    container: str,
    partition_key_path: str,
    indexing_policy: dict[str, Any] | None = None,
    default_ttl: int | None = None,
) -> ContainerProxy:
    """The container, with its database, created when missing (settings apply on creation only).

    Several processes may race to create the same database or container; the loser's 409 just
    means it exists now, so the call is repeated (it then reads instead of creating).
    """
    kwargs: dict[str, Any] = {}
    if indexing_policy is not None:
        kwargs["indexing_policy"] = indexing_policy
    if default_ttl is not None:
        kwargs["default_ttl"] = default_ttl
    attempts = 0
    while True:
        try:
            db = client.create_database_if_not_exists(database)
            return db.create_container_if_not_exists(
                container, PartitionKey(path=partition_key_path), **kwargs
            )
        except CosmosResourceExistsError:
            attempts += 1
            if attempts >= _CREATE_ATTEMPTS:
                raise


#: cosmosdb-server answers a point read of a missing item with this JavaScript error and a 500
#: instead of a 404; real Cosmos DB never sends it.
_EMULATOR_MISSING_ITEM = "Cannot read properties of undefined"


def read_item_or_none(container: ContainerProxy, item_id: str, partition_key: Any) -> Any:
    """Point-read an item: the item, or None when it does not exist (on Cosmos DB or emulator)."""
    try:
        return container.read_item(item_id, partition_key)
    except CosmosResourceNotFoundError:
        return None
    except CosmosHttpResponseError as exc:
        if exc.status_code == 500 and _EMULATOR_MISSING_ITEM in str(exc.message):
            return None
        raise
