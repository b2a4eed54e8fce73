"""The service endpoints the app's settings name: what `services status` checks instead of the
default dev ports when the environment points elsewhere.

AZURE_STORAGE_CONNECTION_STRING names the Blob, Queue and Table endpoints (its `*Endpoint` parts,
or the account's Azure host names), CELERY_BROKER_URL may name the queue endpoint itself
(`azurequeue://KEY@URL`), AZURE_COSMOS_CONNECTION_STRING the Cosmos DB account (`AccountEndpoint`)
and REDIS_URL the Redis server. URLs are shown without passwords or keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlparse

STORAGE_ENV = "AZURE_STORAGE_CONNECTION_STRING"
BROKER_ENV = "CELERY_BROKER_URL"
COSMOS_ENV = "AZURE_COSMOS_CONNECTION_STRING"
REDIS_ENV = "REDIS_URL"
#: Ports of a URL scheme without an explicit port.
_DEFAULT_PORTS = {"http": 80, "https": 443, "redis": 6379, "rediss": 6380}


@dataclass(frozen=True)
class NamedEndpoint:
    """One endpoint a setting names: where it is and which setting said so."""

    url: str
    host: str
    port: int
    setting: str


def _part(conn_str: str, name: str) -> str | None:
    """One `Name=value` part of an Azure connection string."""
    for segment in conn_str.split(";"):
        key, _, value = segment.partition("=")
        if key.strip().lower() == name.lower() and value.strip():
            return value.strip()
    return None


def _endpoint(url: str, setting: str) -> NamedEndpoint | None:
    """The endpoint of `url` (None when it names no host); shown without user or password."""
    parsed = urlparse(url)
    if not parsed.hostname:
        return None
    try:
        port = parsed.port or _DEFAULT_PORTS.get(parsed.scheme, 443)
    except ValueError:  # a port that is not a number: the app names that setting itself
        return None
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return NamedEndpoint(f"{parsed.scheme}://{host}:{port}", parsed.hostname, port, setting)


def named_endpoints(environ: Mapping[str, str]) -> dict[str, NamedEndpoint]:
    """The endpoints the settings in `environ` name, by dev service name (`azurite-queue`, `cosmos`,
    `redis`, ...); a service no setting names is absent."""
    found: dict[str, NamedEndpoint] = {}
    storage = environ.get(STORAGE_ENV, "")
    account = _part(storage, "AccountName")
    suffix = _part(storage, "EndpointSuffix") or "core.windows.net"
    for kind in ("blob", "queue", "table"):
        url = _part(storage, f"{kind.capitalize()}Endpoint") or (f"https://{account}.{kind}.{suffix}" if account
                                                                  else None)
        named = _endpoint(url, STORAGE_ENV) if url else None
        if named is not None:
            found[f"azurite-{kind}"] = named
    broker = environ.get(BROKER_ENV, "")
    if broker.startswith("azurequeue://") and "@" in broker:
        named = _endpoint(broker.split("@", 1)[1], BROKER_ENV)
        if named is not None:
            found["azurite-queue"] = named
    cosmos = _part(environ.get(COSMOS_ENV, ""), "AccountEndpoint")
    named = _endpoint(cosmos, COSMOS_ENV) if cosmos else None
    if named is not None:
        found["cosmos"] = named
    redis = environ.get(REDIS_ENV, "")
    named = _endpoint(redis, REDIS_ENV) if redis else None
    if named is not None:
        found["redis"] = named
    return found
