"""The client the run commands share: built on first use, so commands that fail early touch no service."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowcraft_celery.distributed.client import Client


def client() -> Client:
    """A `Client` over the app's settings (Celery, Cosmos DB and Redis are imported only now)."""
    from flowcraft_celery.distributed.client import Client

    return Client()
