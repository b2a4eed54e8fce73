"""Turn an `azurequeue://` URL and transport options into Azure clients, never exposing secrets."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from .options import Options
from .stats import CountingTransport
from .throttling import BackPressureRetry, ThrottleWatch

SCHEME = "azurequeue://"
ENV_CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"
DEFAULT_CREDENTIAL = "defaultazurecredential"
MASK = "**"

#: Azure SDK request logs go here; quiet by default (a worker at -l INFO would log each poll).
HTTP_LOGGER = logging.getLogger("transports.azurequeue.http")
HTTP_LOGGER.setLevel(logging.WARNING)

URL_FORMS = (
    "azurequeue:// (connection string from the `connection_string` option or "
    f"{ENV_CONNECTION_STRING}), azurequeue://<account key>@<account url>, "
    "azurequeue://<SAS token>@<account url>, azurequeue://DefaultAzureCredential@<account url>"
)


class Secret(str):
    """A string whose repr is masked, for secrets placed in Celery configuration."""

    def __repr__(self) -> str:
        """Hide the value from `celery report`, logs of the settings and debuggers."""
        return repr("********")


@dataclass(frozen=True)
class Clients:
    """The queue and blob service clients of one storage account."""

    queues: QueueServiceClient
    blobs: BlobServiceClient | None
    #: What tells of the queue service's throttling, for requests made beside the SDK (`directqueue`).
    queue_watch: ThrottleWatch | None = None


def split_url(url: str) -> tuple[str, str]:
    """Split `azurequeue://<credential>@<account url>` into (credential, account url)."""
    rest = url[len(SCHEME):] if url.startswith(SCHEME) else url
    if not rest or rest in ("/", "localhost"):
        return "", ""
    if "@" not in rest:
        raise ValueError(f"Need a broker URL like one of: {URL_FORMS}")
    credential, account_url = rest.rsplit("@", 1)
    if not credential or not account_url.startswith(("http://", "https://")):
        raise ValueError(f"Need a broker URL like one of: {URL_FORMS}")
    return credential, account_url


def masked_url(url: str, include_password: bool = False, mask: str = MASK) -> str:
    """Return the broker URL with its credential replaced by `mask` unless asked to keep it."""
    credential, account_url = split_url(url)
    if not account_url:
        return SCHEME
    if include_password or credential.lower() == DEFAULT_CREDENTIAL:
        return f"{SCHEME}{credential}@{account_url}"
    return f"{SCHEME}{mask}@{account_url}"


def _account_name(account_url: str) -> str:
    """Read the account name from an account URL (path-style for emulators, else the host)."""
    parts = urlsplit(account_url)
    host = parts.hostname or ""
    path = [p for p in parts.path.split("/") if p]
    if path and (host.replace(".", "").isdigit() or host == "localhost"):
        return path[0]
    return host.split(".")[0]


def _credential(secret: str, account_url: str) -> Any:
    """Build the SDK credential for the part of the URL before `@`."""
    if secret.lower() == DEFAULT_CREDENTIAL:
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError as exc:
            raise ImportError(
                "azurequeue://DefaultAzureCredential@... needs azure-identity: "
                "pip install 'flowcraft-celery[identity]'"
            ) from exc
        return DefaultAzureCredential()
    if "sig=" in secret:
        return AzureSasCredential(secret.lstrip("?"))
    return AzureNamedKeyCredential(_account_name(account_url), secret)


def _blob_url(queue_url: str, options: dict[str, Any]) -> str | None:
    """Find the blob endpoint that belongs with a queue account URL."""
    if options.get("blob_account_url"):
        return str(options["blob_account_url"])
    if ".queue." in queue_url:
        return queue_url.replace(".queue.", ".blob.", 1)
    return None


def _connection_string(options: dict[str, Any]) -> str:
    """Return the connection string from the transport options or the environment."""
    value = options.get("connection_string") or os.environ.get(ENV_CONNECTION_STRING)
    if not value:
        raise ValueError(
            f"azurequeue:// needs the `connection_string` transport option or "
            f"{ENV_CONNECTION_STRING}; other URL forms: {URL_FORMS}"
        )
    return str(value)


def retry_policy(options: dict[str, Any]) -> BackPressureRetry:
    """The Storage retry policy the transport options ask for (see `throttling`)."""
    opts = Options.from_transport_options(options)
    return BackPressureRetry(opts.retry_first_backoff, opts.retry_max_backoff, opts.retry_total)


def _client_kwargs(service: str, name: str, options: dict[str, Any]) -> tuple[dict[str, Any], ThrottleWatch]:
    """What every Storage client of the transport is built with: a counting transport that tells a
    throttle watch each answer, and the back-pressure retry policy; and that watch."""
    policy = retry_policy(options)
    watch = ThrottleWatch(name, policy.describe())
    kwargs = {"transport": CountingTransport(service, watch=watch), "logger": HTTP_LOGGER, "retry_policy": policy}
    return kwargs, watch


def build_clients(url: str, options: dict[str, Any]) -> Clients:
    """Create the queue and blob clients described by the broker URL and transport options."""
    secret, account_url = split_url(url)
    queue_kwargs, queue_watch = _client_kwargs("queue", "Azure Queue Storage", options)
    blob_kwargs, _ = _client_kwargs("blob", "Azure Blob Storage", options)
    if not account_url:
        conn_str = _connection_string(options)
        queues = QueueServiceClient.from_connection_string(conn_str, **queue_kwargs)
        try:
            blobs: BlobServiceClient | None = BlobServiceClient.from_connection_string(
                conn_str, **blob_kwargs
            )
        except ValueError:
            blobs = None
        return Clients(queues=queues, blobs=blobs, queue_watch=queue_watch)
    credential = _credential(secret, account_url)
    queues = QueueServiceClient(account_url=account_url, credential=credential, **queue_kwargs)
    blob_url = _blob_url(account_url, options)
    blobs = (
        BlobServiceClient(account_url=blob_url, credential=credential, **blob_kwargs)
        if blob_url
        else None
    )
    return Clients(queues=queues, blobs=blobs, queue_watch=queue_watch)
