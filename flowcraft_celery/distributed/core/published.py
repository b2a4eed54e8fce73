"""What a deployment's workers run: loaded when a worker starts, published to Redis for clients.

- `load_worker_code(conf)` imports FLOWCRAFT_NODE_MODULES and reads every blueprint of
  FLOWCRAFT_BLUEPRINTS at once; a fault is a `SettingError` naming the setting and the file, so a
  worker with an unreadable blueprint refuses to start instead of failing runs later.
- `publish_catalog` writes the worker's blueprints (id, version, fingerprint, document) and node
  implementations to the deployment's catalog (`stores/catalog.py`).
- `DeploymentBlueprints` is a client's view: the published blueprints by id, and, for ids no
  worker published, FLOWCRAFT_BLUEPRINTS read lazily on the client's machine if it has it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from flowcraft_celery.engine.builtins import BUILTIN_REGISTRY
from flowcraft_celery.engine.registry import default_registry, import_modules
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.catalog import Catalog, CatalogError, load_blueprints
from flowcraft_celery.model.validation import BUILTIN_USES
from flowcraft_celery.settings import SettingError, Settings
from flowcraft_celery.stores.catalog import RedisCatalogStore


@dataclass
class WorkerCode:
    """A worker's blueprints and node implementation names, read when it starts."""

    blueprints: dict[str, Blueprint]
    nodes: list[str]


_lock = threading.Lock()
_loaded: dict[int, WorkerCode] = {}


def import_node_modules(conf: Mapping[str, Any]) -> None:
    """Import FLOWCRAFT_NODE_MODULES, naming the module that cannot be imported."""
    for module in Settings.from_conf(conf).node_modules:
        try:
            import_modules([module])
        except ImportError as exc:
            raise SettingError("FLOWCRAFT_NODE_MODULES", f"cannot import {module!r} ({exc})",
                               "install it on this machine; a machine that only starts or inspects runs "
                               "needs no node modules (unset it there)") from exc


def load_worker_code(conf: Mapping[str, Any]) -> WorkerCode:
    """Import the node modules and read every blueprint now (once per configuration and process)."""
    with _lock:
        if id(conf) in _loaded:
            return _loaded[id(conf)]
        import_node_modules(conf)
        try:
            blueprints = load_blueprints(list(Settings.from_conf(conf).blueprints))
        except CatalogError as exc:
            raise SettingError("FLOWCRAFT_BLUEPRINTS", str(exc),
                               "fix or remove what it names, then start the worker again") from exc
        nodes = sorted({*default_registry, *BUILTIN_REGISTRY, *BUILTIN_USES})
        _loaded[id(conf)] = code = WorkerCode(blueprints, nodes)
        return code


def worker_code(conf: Mapping[str, Any]) -> WorkerCode | None:
    """The code `load_worker_code` read in this process (workers), or None (clients)."""
    with _lock:
        return _loaded.get(id(conf))


def worker_record(name: str, code: WorkerCode, queues: list[str]) -> dict[str, Any]:
    """What the catalog says about one worker."""
    return {"worker": name, "host": socket.gethostname(), "pid": os.getpid(), "queues": sorted(queues),
            "nodes": code.nodes, "blueprints": {b.id: b.fingerprint[:16] for b in code.blueprints.values()},
            "startedAt": time.time()}


def publish_catalog(store: RedisCatalogStore, name: str, code: WorkerCode, queues: list[str]) -> None:
    """Publish the worker and every blueprint it runs."""
    published = []
    for blueprint in code.blueprints.values():
        entry = {"id": blueprint.id, "version": blueprint.run_version, "fingerprint": blueprint.fingerprint[:16],
                 "uses": sorted({n.uses for n in blueprint.nodes}), "publishedAt": time.time(), "worker": name}
        published.append((entry, blueprint.dumps(indent=None)))
    store.publish(worker_record(name, code, queues), published)


#: Seconds the node implementations the deployment's workers published are trusted before
#: they are read again (each start validates against them).
IMPLEMENTATIONS_MAX_AGE = 5.0


class DeploymentBlueprints(Mapping[str, Blueprint]):
    """Blueprints by id as the deployment's workers published them; unpublished ids from local sources.

    Each lookup reads the blueprint's small catalog entry, so a long-lived client sees a version
    that restarted workers published; a document is fetched and parsed once per content.
    """

    def __init__(self, store: RedisCatalogStore, local: Catalog) -> None:
        self.store = store
        self.local = local
        self._documents: dict[tuple[str, str], Blueprint] = {}
        #: The implementations last read, and when (monotonic seconds).
        self._implementations: tuple[float, frozenset[str]] | None = None

    def __getitem__(self, blueprint_id: str) -> Blueprint:
        entry = self.store.entry(blueprint_id)
        if entry is None:
            return self.local[blueprint_id]
        key = (blueprint_id, str(entry["fingerprint"]))
        if key not in self._documents:
            document = self.store.document(*key)
            if document is None:
                return self.local[blueprint_id]
            self._documents[key] = Blueprint.loads(document)
        return self._documents[key]

    def published(self) -> dict[str, dict[str, Any]]:
        """The published entries by id (no document is read)."""
        return self.store.entries()

    def implementations(self, fresh: bool = False) -> set[str]:
        """Every node implementation some worker of the deployment published: read again when the
        last read is older than `IMPLEMENTATIONS_MAX_AGE` seconds, or `fresh` (a start reads it
        fresh before it refuses an implementation that the last read did not list)."""
        now = time.monotonic()
        known = self._implementations
        if fresh or known is None or now - known[0] > IMPLEMENTATIONS_MAX_AGE:
            known = self._implementations = (
                now, frozenset(n for worker in self.store.workers().values() for n in worker.get("nodes") or []))
        return set(known[1])

    def __iter__(self) -> Iterator[str]:
        return iter(sorted({*self.published(), *self.local}))

    def __len__(self) -> int:
        return len({*self.published(), *self.local})
