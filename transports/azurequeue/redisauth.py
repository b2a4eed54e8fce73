"""Redis clients from a URL, with access keys, TLS, or Microsoft Entra ID (Azure Cache for Redis).

Every Redis client of the transport and of flowcraft-celery is built here (`redis_from_url`):

* keys: `redis://:<password>@host:6379/0`, `rediss://:<access key>@<name>.redis.cache.windows.net:6380/0`;
* TLS: `rediss://`, verified against the system CAs; a private CA with `?ssl_ca_certs=/path/ca.pem`,
  verification off (never in production) with `?ssl_cert_reqs=none` (redis-py's own URL options);
* Microsoft Entra ID: a `rediss://` URL without password, and the credential named by the
  transport option `redis_credential` or the environment variable `FLOWCRAFT_REDIS_CREDENTIAL`:
  `DefaultAzureCredential`, or `module:attribute` naming a TokenCredential (or a callable returning
  one). The client then authenticates with the token's object id and the token itself, refreshed
  before it expires (`redis-entraid`'s credential provider; install the `identity` extra). The
  identity needs a data access policy assignment on the cache (docs/azure.md).
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import Any
from urllib.parse import urlsplit

import redis

from .errors import AzureQueueError

CREDENTIAL_ENV = "FLOWCRAFT_REDIS_CREDENTIAL"
DEFAULT_CREDENTIAL = "DefaultAzureCredential"
#: The scope of Azure Cache for Redis tokens.
REDIS_SCOPE = "https://redis.azure.com/.default"

_providers: dict[tuple[int, str], Any] = {}
_lock = threading.Lock()


class RedisCredentialError(AzureQueueError, ValueError):
    """The Redis credential setting cannot be used; the message names it."""


def _token_credential(spec: Any) -> Any:
    """A TokenCredential from a setting: an object with get_token, a callable, or a name."""
    if not isinstance(spec, str):
        return spec() if isinstance(spec, type) or (callable(spec) and not hasattr(spec, "get_token")) else spec
    if spec.strip().lower() == DEFAULT_CREDENTIAL.lower():
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError as exc:
            raise RedisCredentialError(f"{CREDENTIAL_ENV}=DefaultAzureCredential needs azure-identity: "
                                       "pip install 'flowcraft-celery[identity]'") from exc
        return DefaultAzureCredential()
    module_name, sep, attribute = spec.strip().partition(":")
    if not sep or not module_name or not attribute:
        raise RedisCredentialError(f"{CREDENTIAL_ENV} {spec!r} is neither DefaultAzureCredential nor module:attribute")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise RedisCredentialError(f"{CREDENTIAL_ENV} {spec!r} cannot be loaded: {exc}") from None
    return _token_credential(found)


def credential_provider(spec: Any) -> Any:
    """redis-entraid's credential provider over the TokenCredential `spec` names (one per process
    and setting, so every client shares its token refresh)."""
    key = (os.getpid(), spec if isinstance(spec, str) else f"id:{id(spec)}")
    with _lock:
        provider = _providers.get(key)
        if provider is None:
            try:
                from redis.auth.token_manager import RetryPolicy, TokenManagerConfig
                from redis_entraid.cred_provider import EntraIdCredentialsProvider
                from redis_entraid.identity_provider import DefaultAzureCredentialProvider
            except ImportError as exc:
                raise RedisCredentialError(f"{CREDENTIAL_ENV} needs redis-entraid: "
                                           "pip install 'flowcraft-celery[identity]'") from exc
            identity = DefaultAzureCredentialProvider(_token_credential(spec), (REDIS_SCOPE,))
            config = TokenManagerConfig(0.7, 0, 10_000, RetryPolicy(3, 100))
            provider = _providers[key] = EntraIdCredentialsProvider(identity, config)
        return provider


def redis_from_url(url: str, credential: Any = None, **kwargs: Any) -> redis.Redis:
    """A Redis client for `url` (see the module doc); `credential` (else FLOWCRAFT_REDIS_CREDENTIAL)
    is used when the URL carries no password."""
    spec = credential or os.environ.get(CREDENTIAL_ENV) or None
    if spec and urlsplit(url).password is None:
        kwargs["credential_provider"] = credential_provider(spec)
    return redis.Redis.from_url(url, **kwargs)
