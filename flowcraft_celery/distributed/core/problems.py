"""Configuration and connection problems told in one line: which setting or endpoint, and what to do.

`SettingError` (flowcraft_celery/settings.py) is raised where a setting is read and found wrong.
`explain` recognizes the exceptions the Azure SDKs and redis-py raise when a service is down,
refuses the credentials or the TLS handshake, and names the endpoint and the setting that points at it.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlparse

from flowcraft_celery.errors import FlowcraftError
from flowcraft_celery.model.catalog import CatalogError
from flowcraft_celery.settings import SettingError
from flowcraft_celery.stores.cosmos_client import CONNECTION_STRING_ENV, VERIFY_TLS_ENV, CosmosConfigError
from transports.azurequeue import BrokerUnreachable, account_entries

STORAGE_ENV = "AZURE_STORAGE_CONNECTION_STRING"
REDIS_ENV = "REDIS_URL"
ACCOUNTS_ENV = "FLOWCRAFT_STORAGE_ACCOUNTS"
BROKER_ENV = "CELERY_BROKER_URL"
BACKEND_ENV = "CELERY_RESULT_BACKEND"
#: What to do about a missing or malformed Azure Storage connection string.
STORAGE_FIX = ("run `flowcraft-celery services up --env` for Azurite's value, or copy it from the storage account's "
               "Access keys")


class ServiceUnreachable(FlowcraftError, ConnectionError):
    """A service could not be used; the message names it, its endpoint and the setting."""

    def __init__(self, service: str, endpoint: str, setting: str, reason: str, fix: str) -> None:
        super().__init__(f"cannot reach {service} at {endpoint} ({setting}): {reason}; {fix}")
        self.service = service
        self.setting = setting


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes, outermost first (each once)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _reason(exc: BaseException) -> str:
    """The innermost readable reason of a connection failure (`Connection refused`, a timeout, ...)."""
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out", "No route to host",
                   "Temporary failure in name resolution", "certificate verify failed"):
        if marker.lower() in text.lower():
            return marker.lower()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _mask(url: str) -> str:
    """A URL without its password."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


def _connection_part(conn_str: str, name: str) -> str | None:
    """One `Name=value` part of an Azure connection string."""
    for segment in conn_str.split(";"):
        key, _, value = segment.partition("=")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def _host_port(url: str | None) -> str | None:
    if not url:
        return None
    parsed = urlparse(url)
    if not parsed.hostname:
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return f"{parsed.hostname}:{port}"


def _queue_endpoint(conn_str: str) -> str | None:
    """The queue endpoint of an Azure Storage connection string (named, or the account's in Azure)."""
    queue = _connection_part(conn_str, "QueueEndpoint")
    if queue is None and _connection_part(conn_str, "AccountName"):
        queue = f"https://{_connection_part(conn_str, 'AccountName')}.queue.core.windows.net"
    return queue


def _endpoints(conf: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """The configured endpoints by service name."""
    cosmos = _connection_part(env.get(CONNECTION_STRING_ENV, ""), "AccountEndpoint") or ""
    queue = _queue_endpoint(env.get(STORAGE_ENV, ""))
    broker = str(conf.get("broker_url") or "")
    in_url = broker.split("@", 1)[1] if broker.startswith("azurequeue://") and "@" in broker else ""
    found = {"cosmos": cosmos, "storage": queue or "", "broker": in_url,
             "redis": str(conf.get("flowcraft_redis_url") or "")}
    extra = account_entries((conf.get("broker_transport_options") or {}).get("storage_accounts"))
    for number, entry in enumerate(extra, 1):
        in_entry = entry.rsplit("@", 1)[1] if entry.startswith("azurequeue://") and "@" in entry else None
        found[f"account{number}"] = in_entry or _queue_endpoint(entry) or ""
    return found


def explain(exc: BaseException, conf: Mapping[str, Any], env: Mapping[str, str]) -> Exception | None:
    """A one-line `SettingError`/`ServiceUnreachable` for a configuration or connection failure, else None."""
    endpoints = _endpoints(conf, env)
    for item in _chain(exc):
        if isinstance(item, (SettingError, ServiceUnreachable)):
            return item
        if isinstance(item, CosmosConfigError) and VERIFY_TLS_ENV in str(item):
            return SettingError(VERIFY_TLS_ENV, f"{env.get(VERIFY_TLS_ENV, '')!r} is not a boolean",
                                "set it to true, or to false for the Cosmos emulator only")
        if isinstance(item, CosmosConfigError):
            return SettingError(CONNECTION_STRING_ENV, str(item), "run `flowcraft-celery services up --env` for the "
                                "emulator's value, or copy it from the Azure portal (Keys)")
        if isinstance(item, CatalogError):
            return SettingError("FLOWCRAFT_BLUEPRINTS", str(item))
        if isinstance(item, BrokerUnreachable) and item.account:  # a further storage account, named by its entry
            return ServiceUnreachable("Azure Storage", item.endpoint, f"{ACCOUNTS_ENV} entry {item.account}",
                                      _reason(item.__cause__ or item) if "answer" in item.reason else item.reason,
                                      f"start it or fix entry {item.account} of {ACCOUNTS_ENV}")
        found = (_setting_problem(item, conf, env) or _redis_problem(item, endpoints["redis"])
                 or _azure_problem(item, endpoints))
        if found is not None:
            return found
    return None


def _scheme(url: Any) -> str:
    return str(url or "").partition("://")[0]


def _setting_problem(exc: BaseException, conf: Mapping[str, Any], env: Mapping[str, str]) -> Exception | None:
    """A setting the broker, the result backend or Redis could not even parse."""
    text = str(exc)
    if isinstance(exc, ValueError) and f"or {STORAGE_ENV}" in text and not env.get(STORAGE_ENV):
        return SettingError(STORAGE_ENV, f"{STORAGE_ENV} is not set", STORAGE_FIX)
    if isinstance(exc, ValueError) and "Connection string is either blank or malformed" in text:
        return SettingError(STORAGE_ENV, f"{STORAGE_ENV} is not an Azure Storage connection string (Name=value;... "
                            "with AccountName and AccountKey, or endpoints and a SharedAccessSignature)", STORAGE_FIX)
    if isinstance(exc, ValueError) and text.startswith("Redis URL must specify"):
        shown = re.sub(r"^[^@]*@", "***@", str(conf.get("flowcraft_redis_url") or ""))  # no password shown
        return SettingError(REDIS_ENV, f"{shown!r} is not a Redis URL",
                            "write it as redis://HOST:PORT/DB (rediss:// for TLS, redis://:PASSWORD@HOST:PORT/DB)")
    if isinstance(exc, KeyError) and "No such transport" in text:
        return SettingError(BROKER_ENV, f"unknown transport {_scheme(conf.get('broker_url'))!r}",
                            "leave it unset (azurequeue://, Azure Queue Storage) or name a Kombu transport")
    if isinstance(exc, ImportError) and "azurequeue://DefaultAzureCredential" in text:
        return SettingError(BROKER_ENV, "azurequeue://DefaultAzureCredential@... needs the azure-identity package",
                            "pip install 'flowcraft-celery[identity]', or put an account key or SAS in the URL")
    backend = _scheme(conf.get("result_backend"))
    if isinstance(exc, ImportError) and backend and getattr(exc, "name", None) == backend:
        return SettingError(BACKEND_ENV, f"unknown result backend {backend!r}",
                            "leave it unset (cosmos://, Cosmos DB) or name a Celery result backend")
    return None


def _redis_credential() -> str:
    """The Entra credential Redis clients use (FLOWCRAFT_REDIS_CREDENTIAL), or ''."""
    import os

    return os.environ.get("FLOWCRAFT_REDIS_CREDENTIAL", "")


def _redis_problem(exc: BaseException, url: str) -> Exception | None:
    try:
        import redis.exceptions as rex
    except ImportError:  # pragma: no cover - redis is a dependency
        return None
    where = _mask(url)
    if isinstance(exc, rex.AuthenticationError) and _redis_credential() and "@" not in url.split("//", 1)[-1]:
        return ServiceUnreachable("Redis", where, REDIS_ENV,
                                  f"the Microsoft Entra identity ({_redis_credential()}) was refused",
                                  "give the identity a data access policy on the cache (docs/azure.md)")
    if isinstance(exc, rex.AuthenticationError):
        return ServiceUnreachable("Redis", where, REDIS_ENV, "the password was refused",
                                  "put the right password in REDIS_URL (redis://:PASSWORD@host:port/0)")
    if isinstance(exc, (rex.ConnectionError, rex.TimeoutError)):
        return ServiceUnreachable("Redis", where, REDIS_ENV, _reason(exc),
                                  "start Redis (`flowcraft-celery services up`) or point REDIS_URL at it")
    return None


def _azure_problem(exc: BaseException, endpoints: Mapping[str, str]) -> Exception | None:
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )
    from azure.cosmos.exceptions import CosmosHttpResponseError

    if isinstance(exc, CosmosHttpResponseError) and exc.status_code in (401, 403):
        return ServiceUnreachable("Cosmos DB", endpoints["cosmos"], CONNECTION_STRING_ENV,
                                  "the account key was refused",
                                  "copy the key from the Azure portal (Keys) into AccountKey")
    if (isinstance(exc, HttpResponseError) and not isinstance(exc, CosmosHttpResponseError)
            and _foreign_answer(exc.status_code) and not getattr(exc, "error_code", None)):
        return _not_storage(endpoints, int(exc.status_code or 0), str(exc.reason or ""))
    if isinstance(exc, ClientAuthenticationError):
        setting, endpoint = _storage_setting(endpoints)
        return ServiceUnreachable("Azure Storage", endpoint, setting, "the credentials were refused",
                                  "copy the connection string from the storage account's Access keys")
    if isinstance(exc, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return ServiceUnreachable("Cosmos DB", endpoints["cosmos"], VERIFY_TLS_ENV,
                                  "its TLS certificate is not trusted", f"for the emulator set {VERIFY_TLS_ENV}=false")
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        text = str(exc)
        accounts = [(key, f"{ACCOUNTS_ENV} entry {key[len('account'):]}", "Azure Storage")
                    for key in endpoints if key.startswith("account")]
        for service, setting, name in (("cosmos", CONNECTION_STRING_ENV, "Cosmos DB"),
                                       ("broker", BROKER_ENV, "Azure Storage"),
                                       ("storage", STORAGE_ENV, "Azure Storage"), *accounts):
            host_port = _host_port(endpoints[service])
            if host_port and (host_port in text or host_port.replace(":", "', port=") in text):
                return ServiceUnreachable(name, endpoints[service], setting, _reason(exc),
                                          "start it (`flowcraft-celery services up`) or fix the endpoint in " + setting)
        return ServiceUnreachable("an Azure service", "?", f"{CONNECTION_STRING_ENV} / {STORAGE_ENV}", _reason(exc),
                                  "check both connection strings")
    return None



def _foreign_answer(status: int | None) -> bool:
    """Whether a status without Azure's error code means another server answers (404, 405, 501, ...)."""
    return status is not None and (400 <= status < 500 or status == 501)


def _storage_setting(endpoints: Mapping[str, str]) -> tuple[str, str]:
    """The setting that names the storage endpoint (the broker URL's own, else the connection string's), and it."""
    return (BROKER_ENV, endpoints["broker"]) if endpoints["broker"] else (STORAGE_ENV, endpoints["storage"])


def _not_storage(endpoints: Mapping[str, str], status: int, reason: str) -> SettingError:
    """A storage endpoint that answered an error without Azure's error code: something else listens there."""
    setting, endpoint = _storage_setting(endpoints)
    return SettingError(setting, f"{endpoint or 'the storage endpoint'} answered {status} {reason} without an Azure "
                        "Storage error code, so it is not the queue endpoint of a storage account",
                        f"fix the endpoint in {setting} (Azurite's is http://127.0.0.1:10001/devstoreaccount1)")
