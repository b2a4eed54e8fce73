"""The catalog workers publish, on real Redis: what a client reads, and that it follows a re-publish."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from flowcraft_celery.distributed.core.published import DeploymentBlueprints, WorkerCode, publish_catalog
from flowcraft_celery.model.builder import Flow
from flowcraft_celery.model.catalog import Catalog
from flowcraft_celery.stores.catalog import RedisCatalogStore
from tests.integration import names


@pytest.fixture
def stores(services_env: dict[str, str]) -> Iterator[Callable[[str], RedisCatalogStore]]:
    """Catalog stores of named deployments under one fresh Redis prefix."""
    client = redis.Redis.from_url(services_env["REDIS_URL"])
    prefix = names.unique_name("catalog") + ":"
    yield lambda deployment: RedisCatalogStore(client, prefix, deployment)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


@pytest.fixture
def store(stores: Callable[[str], RedisCatalogStore]) -> RedisCatalogStore:
    return stores("deployment-a")


def code(version: str) -> WorkerCode:
    flow = Flow("greeting", version=version).node("hello", "greet").node("bye", "greet").chain("hello", "bye")
    return WorkerCode({"greeting": flow.build()}, ["greet", "wait"])


def test_a_client_reads_what_the_workers_published_and_follows_a_new_version(
        store: RedisCatalogStore, tmp_path: Path) -> None:
    publish_catalog(store, "w1@host", code("1"), ["flowcraft"])
    catalog = DeploymentBlueprints(store, Catalog([str(tmp_path)]))
    assert catalog["greeting"].version == "1"
    assert store.entries()["greeting"]["version"] == "1"
    assert catalog.implementations() == {"greet", "wait"}
    assert store.workers()["w1@host"]["queues"] == ["flowcraft"]
    publish_catalog(store, "w2@host", code("2"), ["flowcraft"])  # a restarted worker with version 2
    assert catalog["greeting"].version == "2"
    assert catalog.get("nothing") is None
    store.forget_worker("w1@host")
    assert list(store.workers()) == ["w2@host"] and "greeting" in store.entries()


def test_deployments_have_catalogs_of_their_own(stores: Callable[[str], RedisCatalogStore]) -> None:
    publish_catalog(stores("deployment-a"), "w1@host", code("1"), ["flowcraft"])
    other = stores("deployment-b")
    assert other.entries() == {} and other.workers() == {}
