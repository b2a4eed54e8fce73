"""The catalog workers publish, on real Redis: what a client reads, and that it follows a re-publish."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from flowcraft_celery.distributed.core.published import DeploymentBlueprints, WorkerCode, publish_catalog
from flowcraft_celery.distributed.core.runtime import Runtime
from flowcraft_celery.distributed.runs.starting import validate_start
from flowcraft_celery.engine.registry import Registry
from flowcraft_celery.model.builder import Flow
from flowcraft_celery.model.catalog import Catalog
from flowcraft_celery.model.validation import BlueprintValidationError
from flowcraft_celery.stores.catalog import RedisCatalogStore
from flowcraft_celery.stores.due import DueIndex
from flowcraft_celery.stores.ledger import RunLedger
from flowcraft_celery.stores.memory import MemoryContextStore, MemoryCoordinationStore, MemoryStatusStore
from flowcraft_celery.stores.retention import RunRecords
from flowcraft_celery.stores.timeline import RunTimeline
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


def test_a_start_reads_the_workers_again_before_it_refuses_an_implementation(
        store: RedisCatalogStore, tmp_path: Path) -> None:
    """Starts trust the implementations read in the last few seconds, but a worker that has just
    started with a new node type is never refused for it; one that no worker runs still is."""
    publish_catalog(store, "w1@host", code("1"), ["flowcraft"])
    catalog = DeploymentBlueprints(store, Catalog([str(tmp_path)]))
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    prefix = names.unique_name("startcheck") + ":"  # the run stores below are never written
    contexts, statuses, coordination = MemoryContextStore(), MemoryStatusStore(), MemoryCoordinationStore()
    ledger = RunLedger(client, prefix)
    rt = Runtime(contexts=contexts, statuses=statuses, coordination=coordination, ledger=ledger,
                 blueprints=catalog, registry=Registry(), timeline=RunTimeline(client, prefix),
                 records=RunRecords(contexts, statuses, ledger, coordination),
                 due=DueIndex(client, prefix, "flowcraft"))
    validate_start(rt, code("1").blueprints["greeting"])  # reads the implementations: greet, wait
    shouting = Flow("shouting").node("s", "shout").build()
    publish_catalog(store, "w2@host", WorkerCode({"shouting": shouting}, ["shout"]), ["flowcraft"])
    assert "shout" not in catalog.implementations()  # the last read is still trusted
    validate_start(rt, shouting)  # read again before refusing: the new worker runs it
    with pytest.raises(BlueprintValidationError, match="nobody-runs-this"):
        validate_start(rt, Flow("orphan").node("o", "nobody-runs-this").build())
