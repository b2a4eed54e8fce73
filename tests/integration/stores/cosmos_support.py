"""Helpers for the Cosmos integration tests: the process's client and throwaway databases."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

from azure.cosmos import CosmosClient
from azure.cosmos.exceptions import CosmosResourceNotFoundError

from flowcraft_celery.stores.cosmos_client import get_client
from tests.integration.names import unique_name


def client() -> CosmosClient:
    """The Cosmos client for the dev services' emulator (env set by `services_env`)."""
    return get_client()


@contextmanager
def temp_database(prefix: str = "test") -> Iterator[str]:
    """A unique database name; the database is deleted afterwards if anything created it."""
    name = unique_name(prefix)
    try:
        yield name
    finally:
        with suppress(CosmosResourceNotFoundError):
            client().delete_database(name)
