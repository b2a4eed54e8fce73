"""CosmosStatusStore against the cosmosdb-server emulator: lifecycle, once-only finish, stalled runs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from flowcraft_celery.stores.base import RunStatusDoc, ValueTooLargeError
from flowcraft_celery.stores.cosmos import CosmosStatusStore
from flowcraft_celery.stores.cosmos_client import request_counts, reset_request_counts
from tests.integration.stores import cosmos_support


@pytest.fixture
def store(services_env: dict[str, str]) -> Iterator[CosmosStatusStore]:
    """A status store in a throwaway database."""
    with cosmos_support.temp_database("runs") as name:
        yield CosmosStatusStore(cosmos_support.client(), database=name)


def new_run(store: CosmosStatusStore, **fields: object) -> str:
    """Create a running run and return its id."""
    run = f"run-{uuid.uuid4().hex[:12]}"
    doc: dict[str, object] = {"runId": run, "blueprintId": "bp", "blueprintVersion": "3"}
    doc.update(fields)
    store.create(RunStatusDoc(**doc))  # type: ignore[typeddict-item]
    return run


def test_create_and_get(store: CosmosStatusStore) -> None:
    before = time.time()
    run = new_run(store)
    doc = store.get(run)
    assert doc is not None
    assert doc["runId"] == run and doc["blueprintId"] == "bp" and doc["blueprintVersion"] == "3"
    assert doc["status"] == "running"
    assert before <= doc["createdAt"] == doc["lastUpdated"] <= time.time()
    assert not any(key.startswith("_") for key in doc)
    assert store.get("no-such-run") is None


def test_create_is_idempotent(store: CosmosStatusStore) -> None:
    run = new_run(store)
    store.update(run, {"awaiting": ["w"]})
    store.create({"runId": run, "blueprintId": "other"})
    doc = store.get(run)
    assert doc is not None and doc["blueprintId"] == "bp" and doc["awaiting"] == ["w"]


@pytest.mark.parametrize("direct", [True, False], ids=["signed-here", "sdk"])
def test_a_status_created_either_way_is_one_request_and_reads_back_intact(services_env: dict[str, str],
                                                                          direct: bool) -> None:
    """A new run's status is created with a request flowcraft signs (FLOWCRAFT_DIRECT_COSMOS_REQUESTS,
    the default) or through the SDK: one request, the same document either way, and a second create
    of the run changes nothing."""
    with cosmos_support.temp_database("runs") as name:
        store = CosmosStatusStore(cosmos_support.client(), database=name, deployment="d1", direct_requests=direct)
        run = f"run-{uuid.uuid4().hex[:12]}"
        start_input = {"text": "<a href='x'>ü & é</a> \u2603", "n": [1, 2.5, None, True]}
        reset_request_counts()
        store.create({"runId": run, "blueprintId": "bp", "startInput": start_input})
        assert request_counts() == {"docs:create": 1}
        store.create({"runId": run, "blueprintId": "other"})
        doc = store.get(run)
        assert doc is not None and doc["blueprintId"] == "bp" and doc["startInput"] == start_input
        assert doc["status"] == "running"
        assert [d["runId"] for d in store.list_runs()] == [run]


def test_touch_moves_last_updated_with_one_request(store: CosmosStatusStore) -> None:
    run = new_run(store)
    first = store.get(run)
    assert first is not None
    reset_request_counts()
    store.touch(run)
    assert request_counts() == {"docs:patch": 1}
    second = store.get(run)
    assert second is not None and second["lastUpdated"] > first["lastUpdated"]
    store.touch("no-such-run")


def test_update_sets_fields_until_final(store: CosmosStatusStore) -> None:
    run = new_run(store)
    assert store.update(run, {"status": "awaiting", "awaiting": ["approve"]})
    doc = store.get(run)
    assert doc is not None and doc["status"] == "awaiting" and doc["awaiting"] == ["approve"]
    assert store.finish(run, "completed", {"status": "completed"}, [])
    assert not store.update(run, {"status": "running"})
    doc = store.get(run)
    assert doc is not None and doc["status"] == "completed"
    assert not store.update("no-such-run", {"awaiting": []})


def test_update_with_more_fields_than_one_patch_allows(store: CosmosStatusStore) -> None:
    run = new_run(store)
    fields = {f"extra{i}": i for i in range(12)}
    assert store.update(run, fields)
    doc = store.get(run)
    assert doc is not None and all(doc[k] == v for k, v in fields.items())  # type: ignore[literal-required]
    store.finish(run, "failed", None, [{"nodeId": "n", "message": "boom n"}])
    assert not store.update(run, fields)


def test_finish_happens_once_under_concurrency(store: CosmosStatusStore) -> None:
    run = new_run(store)
    def finish(i: int) -> bool:
        return store.finish(run, "completed" if i % 2 else "failed", {"winner": i}, []) is not None

    with ThreadPoolExecutor(max_workers=10) as pool:
        done = list(pool.map(finish, range(20)))
    assert done.count(True) == 1
    winner = done.index(True)
    doc = store.get(run)
    assert doc is not None
    assert doc["status"] == ("completed" if winner % 2 else "failed")
    assert doc["result"] == {"winner": winner}


def test_finish_answers_the_document_as_finished_in_the_one_patch(store: CosmosStatusStore) -> None:
    run = new_run(store, parentRunId="parent-1")
    reset_request_counts()
    finished = store.finish(run, "completed", {"status": "completed", "context": {"x": 1}}, [])
    assert request_counts() == {"docs:patch": 1}
    assert finished is not None and finished == store.get(run)
    assert finished["parentRunId"] == "parent-1" and finished["createdAt"] <= finished["lastUpdated"]
    assert store.finish(run, "failed", None, []) is None


def test_finish_records_result_and_errors(store: CosmosStatusStore) -> None:
    run = new_run(store, wakeAt=time.time() + 60)
    errors = [{"nodeId": "a", "message": "boom a", "attempt": 2}]
    assert store.finish(run, "failed", {"status": "failed", "context": {"x": 1}}, errors)
    doc = store.get(run)
    assert doc is not None
    assert doc["status"] == "failed" and doc["errors"] == errors
    assert doc["result"] == {"status": "failed", "context": {"x": 1}}
    assert doc.get("wakeAt") is None
    with pytest.raises(ValueError, match="running"):
        store.finish(run, "running", None, [])


def test_too_large_result_is_refused_by_name(store: CosmosStatusStore) -> None:
    run = new_run(store)
    with pytest.raises(ValueTooLargeError, match="result"):
        store.finish(run, "completed", {"context": {"blob": "b" * (3 * 1024 * 1024)}}, [])
    doc = store.get(run)
    assert doc is not None and doc["status"] == "running"


def test_live_page_pages_through_every_run_not_final(store: CosmosStatusStore) -> None:
    running = [new_run(store) for _ in range(7)]
    sleeping = new_run(store, wakeAt=time.time() + 3600)
    finished = new_run(store)
    store.finish(finished, "completed", None, [])
    waiting = new_run(store)
    store.update(waiting, {"status": "awaiting"})
    reset_request_counts()
    found: list[str] = []
    page, following = store.live_page(3, None)
    found += [doc["runId"] for doc in page]
    while following is not None:
        page, following = store.live_page(3, following)
        found += [doc["runId"] for doc in page]
    assert sorted(found) == sorted([*running, sleeping, waiting])
    assert request_counts().get("docs:query", 0) >= 3


def test_list_runs_newest_first(store: CosmosStatusStore) -> None:
    runs = []
    for _ in range(4):
        runs.append(new_run(store))
        time.sleep(0.01)
    store.finish(runs[1], "completed", None, [])
    assert [d["runId"] for d in store.list_runs(limit=3)] == runs[::-1][:3]
    assert [d["runId"] for d in store.list_runs(status="completed")] == [runs[1]]


def test_deployments_sharing_a_database_see_only_their_own_runs(services_env: dict[str, str]) -> None:
    with cosmos_support.temp_database("deploy") as database:
        blue = CosmosStatusStore(cosmos_support.client(), database=database, deployment="blue-flowcraft")
        green = CosmosStatusStore(cosmos_support.client(), database=database, deployment="green-flowcraft")
        check_scoped(blue, green)


def check_scoped(blue: CosmosStatusStore, green: CosmosStatusStore) -> None:
    """Each store sweeps and lists only the run it created."""
    blue_run, green_run = new_run(blue), new_run(green)
    assert [d["runId"] for d in blue.live_page(10, None)[0]] == [blue_run]
    assert [d["runId"] for d in green.live_page(10, None)[0]] == [green_run]
    assert [d["runId"] for d in blue.list_runs()] == [blue_run]
    assert [d["runId"] for d in green.list_runs(status="running")] == [green_run]
    assert blue.get(blue_run)["deployment"] == "blue-flowcraft"  # type: ignore[index]
