"""In-memory stand-ins for the services the transport talks to, at the narrowest seam.

`FakeQueueService` plays Azure Queue Storage as the SDK's `QueueServiceClient` and `QueueClient`
show it (the calls the transport makes, with Azure's visibility, pop receipt, dequeue count and
error semantics); Redis is `fakeredis` (it runs the transport's Lua scripts and blocking pops).
`fake_services` wires both into a Kombu connection by replacing the two functions that build
the real clients, so everything above them is the transport's own code; `fake_accounts` does the
same with three fake storage accounts (the broker's and two of the `storage_accounts` option),
each with a fake blob service (`FakeBlobService`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from transports.azurequeue.auth import Clients


@dataclass
class FakeMessage:
    """A queue message as the SDK returns it (the fields the transport reads)."""

    id: str
    content: str
    visible_at: float
    expires_at: float | None
    dequeue_count: int = 0
    pop_receipt: str | None = None
    inserted_on: Any = None


@dataclass
class FakeQueue:
    """One Azure queue: its metadata and messages."""

    name: str
    metadata: dict[str, str] = field(default_factory=dict)
    messages: dict[str, FakeMessage] = field(default_factory=dict)


@dataclass
class Properties:
    """What `get_queue_properties` and `list_queues` return."""

    name: str
    metadata: dict[str, str]
    approximate_message_count: int


class Pages:
    """An SDK item paged result: iterable, and `by_page()` gives one page holding every item."""

    def __init__(self, items: list[Any]) -> None:
        self._items = items

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def by_page(self) -> Iterator[list[Any]]:
        return iter([self._items])


def _not_found(what: str) -> ResourceNotFoundError:
    return ResourceNotFoundError(message=f"{what} does not exist")


def _receipt_mismatch() -> HttpResponseError:
    error = HttpResponseError(message="The specified pop receipt did not match")
    error.error_code = "PopReceiptMismatch"
    return error


class FakeQueueService:
    """Azure Queue Storage in memory, shared by every connection of a test; counts requests."""

    url = "http://127.0.0.1:1/fakeaccount"

    def __init__(self, url: str | None = None) -> None:
        if url is not None:
            self.url = url
        self.queues: dict[str, FakeQueue] = {}
        self.requests: Counter[str] = Counter()
        self.lock = threading.RLock()

    # QueueServiceClient ------------------------------------------------------------------

    def get_queue_client(self, name: str) -> FakeQueueClient:
        return FakeQueueClient(self, name)

    def list_queues(self, name_starts_with: str | None = None, include_metadata: bool = False,
                    **_: Any) -> Pages:
        self.requests["list"] += 1
        with self.lock:
            return Pages([Properties(q.name, dict(q.metadata), len(q.messages))
                          for q in sorted(self.queues.values(), key=lambda q: q.name)
                          if q.name.startswith(name_starts_with or "")])

    def delete_queue(self, name: str) -> None:
        self.get_queue_client(name).delete_queue()

    # What a test reads -------------------------------------------------------------------

    def texts(self, name: str) -> list[str]:
        """The texts of every message of an Azure queue, visible or not (none if it does not exist)."""
        with self.lock:
            queue = self.queues.get(name)
            return [m.content for m in queue.messages.values()] if queue else []

    def lapse(self, name: str) -> None:
        """Make every invisible message of a queue visible now, as if its consumer died."""
        with self.lock:
            for message in self.queues[name].messages.values():
                message.visible_at = min(message.visible_at, time.monotonic())


class FakeQueueClient:
    """One Azure queue as `QueueClient` shows it."""

    def __init__(self, service: FakeQueueService, name: str) -> None:
        self._service = service
        self.queue_name = name

    def _queue(self) -> FakeQueue:
        queue = self._service.queues.get(self.queue_name)
        if queue is None:
            raise _not_found(f"queue {self.queue_name}")
        return queue

    def create_queue(self, metadata: dict[str, str] | None = None, **_: Any) -> None:
        self._service.requests["create"] += 1
        with self._service.lock:
            if self.queue_name in self._service.queues:
                raise ResourceExistsError(message="queue exists")
            self._service.queues[self.queue_name] = FakeQueue(self.queue_name, dict(metadata or {}))

    def delete_queue(self, **_: Any) -> None:
        self._service.requests["delete_queue"] += 1
        with self._service.lock:
            if self._service.queues.pop(self.queue_name, None) is None:
                raise _not_found(f"queue {self.queue_name}")

    def get_queue_properties(self, **_: Any) -> Properties:
        self._service.requests["properties"] += 1
        with self._service.lock:
            queue = self._queue()
            return Properties(queue.name, dict(queue.metadata), len(queue.messages))

    def set_queue_metadata(self, metadata: dict[str, str] | None = None, **_: Any) -> None:
        self._service.requests["metadata"] += 1
        with self._service.lock:
            self._queue().metadata = dict(metadata or {})

    def clear_messages(self, **_: Any) -> None:
        with self._service.lock:
            self._queue().messages.clear()

    def send_message(self, content: str, visibility_timeout: float | None = None,
                     time_to_live: int | None = None, **_: Any) -> FakeMessage:
        self._service.requests["send"] += 1
        now = time.monotonic()
        message = FakeMessage(uuid.uuid4().hex, content, now + (visibility_timeout or 0),
                              now + time_to_live if time_to_live else None)
        with self._service.lock:
            self._queue().messages[message.id] = message
        return message

    def receive_messages(self, messages_per_page: int = 1, max_messages: int | None = None,
                         visibility_timeout: float = 30, **_: Any) -> Pages:
        self._service.requests["receive"] += 1
        now = time.monotonic()
        taken: list[FakeMessage] = []
        with self._service.lock:
            queue = self._queue()
            for message in list(queue.messages.values()):
                if message.expires_at is not None and message.expires_at <= now:
                    del queue.messages[message.id]
                elif message.visible_at <= now and len(taken) < (max_messages or messages_per_page):
                    message.dequeue_count += 1
                    message.pop_receipt = uuid.uuid4().hex
                    message.visible_at = now + visibility_timeout
                    taken.append(FakeMessage(message.id, message.content, message.visible_at, None,
                                             message.dequeue_count, message.pop_receipt))
        return Pages(taken)

    def peek_messages(self, max_messages: int = 1, **_: Any) -> list[FakeMessage]:
        now = time.monotonic()
        with self._service.lock:
            return [m for m in self._queue().messages.values() if m.visible_at <= now][:max_messages]

    def _held(self, message_id: str, pop_receipt: str) -> FakeMessage:
        message = self._queue().messages.get(message_id)
        if message is None:
            raise _not_found(f"message {message_id}")
        if message.pop_receipt != pop_receipt:
            raise _receipt_mismatch()
        return message

    def update_message(self, message: str, pop_receipt: str, visibility_timeout: float = 0, **_: Any) -> FakeMessage:
        self._service.requests["update"] += 1
        with self._service.lock:
            held = self._held(message, pop_receipt)
            held.pop_receipt = uuid.uuid4().hex
            held.visible_at = time.monotonic() + visibility_timeout
            return FakeMessage(held.id, held.content, held.visible_at, None, held.dequeue_count, held.pop_receipt)

    def delete_message(self, message: str, pop_receipt: str | None = None, **_: Any) -> None:
        self._service.requests["delete"] += 1
        with self._service.lock:
            self._held(message, pop_receipt or "")
            del self._queue().messages[message]


@dataclass
class FakeServices:
    """The fake Azure account and Redis server of one test."""

    azure: FakeQueueService
    redis: fakeredis.FakeServer

    def redis_client(self) -> fakeredis.FakeRedis:
        return fakeredis.FakeRedis(server=self.redis, decode_responses=True)


@pytest.fixture
def fake_services(monkeypatch: pytest.MonkeyPatch) -> FakeServices:
    """Every `azurequeue://` connection of the test talks to one fake account and one fake Redis."""
    services = FakeServices(FakeQueueService(), fakeredis.FakeServer())
    monkeypatch.setattr("transports.azurequeue.transport.build_clients",
                        lambda url, options: Clients(services.azure, None))
    monkeypatch.setattr("transports.azurequeue.redisside.redis_from_url",
                        lambda url, credential=None, **kwargs: services.redis_client())
    return services


class FakeBlobService:
    """Blob Storage in memory as `BlobServiceClient` shows it to the large-body store."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def create_container(self, name: str) -> None:
        pass

    def get_blob_client(self, container: str, name: str) -> FakeBlob:
        return FakeBlob(self, f"{container}/{name}")


@dataclass
class FakeBlob:
    """One blob: upload, download, delete."""

    service: FakeBlobService
    key: str

    def upload_blob(self, data: bytes, overwrite: bool = False) -> None:
        self.service.blobs[self.key] = data

    def download_blob(self) -> FakeBlob:
        if self.key not in self.service.blobs:
            raise _not_found(f"blob {self.key}")
        return self

    def readall(self) -> bytes:
        return self.service.blobs[self.key]

    def delete_blob(self) -> None:
        if self.service.blobs.pop(self.key, None) is None:
            raise _not_found(f"blob {self.key}")


#: The `storage_accounts` entries of `fake_accounts`: accounts 1 and 2.
FAKE_ENTRIES = [f"DefaultEndpointsProtocol=http;AccountName=fake{n};AccountKey=c2VjcmV0{n}0=;"
                f"QueueEndpoint=http://127.0.0.1:1/fake{n}" for n in (1, 2)]


@dataclass
class FakeAccounts:
    """Three fake storage accounts (account 0 the broker's; 1 and 2 named by `FAKE_ENTRIES`) and Redis."""

    azure: list[FakeQueueService]
    blobs: list[FakeBlobService]
    redis: fakeredis.FakeServer

    def where(self, name: str) -> list[int]:
        """The numbers of the accounts holding an Azure queue named `name`."""
        return [number for number, service in enumerate(self.azure) if name in service.queues]


@pytest.fixture
def fake_accounts(monkeypatch: pytest.MonkeyPatch) -> FakeAccounts:
    """Every `azurequeue://` connection of the test talks to three fake accounts and one fake Redis:
    a connection string of `FAKE_ENTRIES` names account 1 or 2, any other the broker's, account 0."""
    made = FakeAccounts([FakeQueueService(f"http://127.0.0.1:1/fake{n}") for n in range(3)],
                        [FakeBlobService() for _ in range(3)], fakeredis.FakeServer())

    def build(url: str, options: dict[str, Any]) -> Clients:
        entry = options.get("connection_string")
        number = FAKE_ENTRIES.index(entry) + 1 if entry in FAKE_ENTRIES else 0
        return Clients(made.azure[number], made.blobs[number])  # type: ignore[arg-type]

    monkeypatch.setattr("transports.azurequeue.transport.build_clients", build)
    monkeypatch.setattr("transports.azurequeue.accounts.build_clients", build)  # operator tools, queue evidence
    monkeypatch.setattr("transports.azurequeue.redisside.redis_from_url",
                        lambda url, credential=None, **kwargs: fakeredis.FakeRedis(server=made.redis,
                                                                                   decode_responses=True))
    return made
