"""Removing what the session's tests left on the shared dev services: the Azure queues and Cosmos DB
databases whose names contain a name the session made (`names.MADE`, each with 8 random hex
digits; a deployment's queue prefix may stand before it), so test runs do not pile them up for
every later run and session on the machine. Best effort: a failure is reported, never raised."""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping

from azure.storage.queue import QueueServiceClient

from flowcraft_celery.stores.cosmos_client import get_client


def remove_leftovers(env: Mapping[str, str], made: Collection[str]) -> None:
    """Delete the queues and databases of the dev services in `env` whose names contain one of `made`."""
    names = sorted(made)
    if not names:
        return
    try:
        queues = QueueServiceClient.from_connection_string(env["AZURE_STORAGE_CONNECTION_STRING"])
        for queue in queues.list_queues():
            if any(name in queue.name for name in names):
                queues.delete_queue(queue.name)
    except Exception as exc:
        warnings.warn(f"could not remove the session's queues: {exc}".splitlines()[0], stacklevel=1)
    try:
        cosmos = get_client(env["AZURE_COSMOS_CONNECTION_STRING"], False)
        for database in list(cosmos.list_databases()):
            if any(name in str(database["id"]) for name in names):
                cosmos.delete_database(database["id"])
    except Exception as exc:
        warnings.warn(f"could not remove the session's Cosmos DB databases: {exc}".splitlines()[0], stacklevel=1)
