"""What Flower needs from a flowcraft deployment: queue depths on its Broker page, and every node task.

Flower knows queue depths only for AMQP and Redis brokers: for any other URL its `Broker` factory
raises and the Broker page and `/api/queues/length` answer 404. `install_broker(app)` puts a
factory in Flower's place that answers `azurequeue://` itself (`AzureQueueBroker`: every task and
dead-letter queue of the deployment with its Azure count, visible, delayed and dead-lettered
messages; one `list` plus one `get_properties` per queue per page load) and hands any other URL
to Flower's own. The app installs it when Flower loads the app's modules (Flower has no plug-in
point for brokers; `flowcraft_celery/distributed/app.py` calls this from `import_modules`).

Flower refuses to set a rate or time limit on a task its app has not registered, and a process
without FLOWCRAFT_NODE_MODULES registers only the built-in node tasks. `NodeTaskRegistry` is the
app's task registry: outside workers, a `flowcraft.node.<uses>` it does not hold yet is registered
on first lookup when a running worker of the deployment published `<uses>` in the catalog (the
listing is read at most every `CATALOG_SECONDS`), so Flower's Limits buttons reach the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

from celery import Celery
from celery.app.registry import TaskRegistry

from flowcraft_celery.distributed.ops.queues import QueueRow, queue_rows
from flowcraft_celery.settings import Settings
from flowcraft_celery.stores.catalog import RedisCatalogStore
from transports.azurequeue import redis_from_url

#: Seconds a registry trusts its last read of the published node implementations.
CATALOG_SECONDS = 5.0
#: The task name prefix of node tasks.
NODE_TASK_PREFIX = "flowcraft.node."


def queue_depths(rows: list[QueueRow]) -> list[dict[str, Any]]:
    """Flower's queue entries (`name`, `messages`, `messages_ready`) with our depths: `visible`,
    `delayed` and `dead_lettered` for a task queue; a dead-letter queue is listed as its own row."""
    dead = {row.info.dead_letter_of: row.info.messages or 0 for row in rows if row.info.dead_letter_of}
    out = []
    for row in rows:
        if row.info.messages is None:
            continue
        entry: dict[str, Any] = {"name": row.info.name, "messages": row.info.messages, "messages_ready": row.visible,
                                 "messages_unacknowledged": None, "kind": row.info.kind}
        if row.info.kind == "tasks":
            entry.update(visible=row.visible, delayed=row.delayed, dead_lettered=dead.get(row.info.name, 0))
        out.append(entry)
    return out


class AzureQueueBroker:
    """Flower's broker interface over the deployment's Azure queues."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    async def queues(self, names: list[str]) -> list[dict[str, Any]]:
        """Every task and dead-letter queue of the deployment (not only the `names` Flower's
        workers consume), read in a thread so Flower's event loop keeps serving."""
        rows = await asyncio.to_thread(queue_rows, self.app)
        return queue_depths(rows)


def install_broker(app: Celery) -> bool:
    """Make Flower's Broker page and `/api/queues/length` answer for `azurequeue://` (when this
    process has Flower loaded; True if the factory is in place)."""
    views = sys.modules.get("flower.views")
    if views is None:
        return False
    original = views.Broker
    if getattr(original, "flowcraft_app", None) is app:
        return True
    flower_broker = getattr(original, "flower_broker", original)

    def broker(url: str, *args: Any, **kwargs: Any) -> Any:
        if urlparse(url).scheme == "azurequeue":
            return AzureQueueBroker(app)
        return flower_broker(url, *args, **kwargs)

    broker.flowcraft_app = app  # type: ignore[attr-defined]
    broker.flower_broker = flower_broker  # type: ignore[attr-defined]
    setattr(views, "Broker", broker)  # noqa: B010 - a module attribute mypy cannot see
    return True


class NodeTaskRegistry(TaskRegistry):
    """The app's task registry; outside workers it also holds the node tasks the deployment's
    workers published (see the module docstring)."""

    #: Whether lookups consult the catalog (off in a worker: it runs only what it imported).
    serve_published = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app: Celery | None = None
        self.register_node_tasks: Callable[[Celery, list[str]], None] | None = None
        self._lock = threading.RLock()
        self._adding: set[str] = set()
        self._published: set[str] = set()
        self._read_at = float("-inf")

    def __contains__(self, name: object) -> bool:
        if super().__contains__(name):
            return True
        if not (isinstance(name, str) and name.startswith(NODE_TASK_PREFIX) and self.serve_published):
            return False
        app, register = self.app, self.register_node_tasks
        if app is None or register is None or not app.finalized:
            return False
        uses = name[len(NODE_TASK_PREFIX):]
        with self._lock:
            if name in self._adding or uses not in self.published():
                return False
            self._adding.add(name)
            try:
                register(app, [uses])
            finally:
                self._adding.discard(name)
        return super().__contains__(name)

    @contextlib.contextmanager
    def own_tasks(self) -> Iterator[None]:
        """Lookups inside answer from the registered tasks alone (registering the app's own)."""
        before, self.serve_published = self.serve_published, False
        try:
            yield
        finally:
            self.serve_published = before

    def published(self) -> set[str]:
        """The node implementations the deployment's running workers published (cached)."""
        if self.app is None:
            return set()
        if time.monotonic() - self._read_at >= CATALOG_SECONDS:
            try:
                settings = Settings.from_conf(self.app.conf)
                client = redis_from_url(settings.redis_url)
                try:
                    store = RedisCatalogStore(client, settings.key_prefix, settings.deployment)
                    workers = store.workers().values()
                finally:
                    client.close()
                self._published = {str(n) for worker in workers for n in worker.get("nodes") or []}
            except Exception:  # Redis unreachable: the tasks are unknown for now, as before
                self._published = set()
            self._read_at = time.monotonic()
        return self._published
