"""Which storage account holds each queue: queue shards spread over several accounts.

Account 0 is the broker URL's (or the connection string's); the `storage_accounts` option adds
accounts 1, 2, ... (K accounts in all). A queue named `<queue>-shard<i>` lives in account
i mod K, and so does its dead-letter queue `<queue>-shard<i>-dlq`; every other queue (a queue's
shard 0, which keeps the queue's own name, control and reply queues, their dead-letter queues)
lives in account 0. Large bodies are stored in the blob service of the account holding their
queue. This module is the one place that knows the mapping; with one account it asks nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from azure.storage.queue import QueueServiceClient

from .auth import SCHEME, Clients, build_clients, split_url
from .errors import AzureQueueError
from .naming import DEAD_LETTER_SUFFIX

#: What a shard's name adds to its queue's name, followed by the shard's number (1, 2, ...).
SHARD_SUFFIX = "-shard"
_SHARD = re.compile(rf"{SHARD_SUFFIX}([1-9][0-9]*)(?:{DEAD_LETTER_SUFFIX})*$")
#: The transport option listing the further accounts.
OPTION = "storage_accounts"

Builder = Callable[[str, dict[str, Any]], Clients]
"""Builds one account's clients from a broker URL and transport options (`auth.build_clients`)"""


class AccountError(AzureQueueError, ValueError):
    """An entry of the `storage_accounts` option is not a connection string or account URL."""

    def __init__(self, number: int, detail: str) -> None:
        super().__init__(f"`{OPTION}` entry {number} (storage account {number}) is not usable: {detail}")
        self.detail = detail


def shard_queue_name(queue: str, index: int) -> str:
    """The name of shard `index` of `queue` (shard 0 is the queue itself)."""
    return queue if index == 0 else f"{queue}{SHARD_SUFFIX}{index}"


def shard_index(queue: str) -> int:
    """The shard number a queue's name carries (its dead-letter queue's too); 0 for any other."""
    match = _SHARD.search(queue)
    return int(match.group(1)) if match else 0


def account_entries(value: Any) -> list[str]:
    """The entries of the `storage_accounts` option: a list, or one text of entries separated
    by whitespace (which no connection string or account URL contains)."""
    if not value:
        return []
    items = value.split() if isinstance(value, str) else list(value)
    return [str(item).strip() for item in items if str(item).strip()]


def _entry_clients(number: int, entry: str, options: dict[str, Any], build: Builder) -> Clients:
    """The clients of one entry: a connection string, or `azurequeue://<credential>@<account url>`."""
    own = {k: v for k, v in options.items() if k not in ("connection_string", "blob_account_url", OPTION)}
    try:
        if entry.startswith(SCHEME):
            if not split_url(entry)[1]:
                raise ValueError(f"an entry needs the account: {SCHEME}<credential>@<account url>")
            return build(entry, own)
        if "=" not in entry:
            raise ValueError("neither a connection string (Name=value;...) nor azurequeue://<credential>@<account url>")
        return build("", {**own, "connection_string": entry})
    except (ValueError, ImportError) as exc:
        raise AccountError(number, str(exc)) from None


def account_problem(entry: str) -> str | None:
    """Why `entry` cannot name a storage account (None when it can); asks the account nothing."""
    try:
        _entry_clients(1, entry, {}, build_clients)
    except AccountError as exc:
        return exc.detail
    return None


@dataclass(frozen=True)
class Accounts:
    """The storage accounts of one connection, account 0 first, and where each queue lives."""

    clients: tuple[Clients, ...]

    @classmethod
    def build(cls, url: str, options: dict[str, Any], build: Builder | None = None) -> Accounts:
        """Every account of a broker URL and its transport options (each built by `build`, default
        `auth.build_clients`); AccountError names a bad entry."""
        build = build or build_clients
        main = build(url, options)
        extra = account_entries(options.get(OPTION))
        return cls((main, *(_entry_clients(i, entry, options, build) for i, entry in enumerate(extra, 1))))

    def index(self, queue: str) -> int:
        """The number of the account holding Kombu queue `queue`."""
        return shard_index(queue) % len(self.clients) if len(self.clients) > 1 else 0

    def of(self, queue: str) -> Clients:
        """The clients of the account holding Kombu queue `queue`."""
        return self.clients[self.index(queue)]

    def queue_services(self) -> Iterator[tuple[int, QueueServiceClient]]:
        """(account number, queue service) of every account, account 0 first."""
        for number, clients in enumerate(self.clients):
            yield number, clients.queues

    def where(self, number: int) -> str:
        """An account's queue endpoint for messages (never its key or SAS)."""
        url = str(self.clients[number].queues.url).split("?", 1)[0]
        return url if number == 0 else f"`{OPTION}` entry {number} ({url.rstrip('/')})"
