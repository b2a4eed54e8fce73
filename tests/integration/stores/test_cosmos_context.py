"""CosmosContextStore against the cosmosdb-server emulator: semantics, concurrency, size limits."""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from flowcraft_celery.stores.base import MISSING, PatchOp, RecordedOutput, ValueTooLargeError
from flowcraft_celery.stores.cosmos import CosmosContextStore, CosmosStatusStore
from flowcraft_celery.stores.cosmos_client import request_counts, reset_request_counts
from tests.integration.stores import cosmos_support


@pytest.fixture
def database(services_env: dict[str, str]) -> Iterator[str]:
    """A throwaway database for one test."""
    with cosmos_support.temp_database("ctx") as name:
        yield name


@pytest.fixture
def store(database: str) -> CosmosContextStore:
    """A context store in the test's database."""
    return CosmosContextStore(cosmos_support.client(), database=database)


def run_id() -> str:
    """A fresh run id."""
    return f"run-{uuid.uuid4().hex[:12]}"


def test_set_get_has_delete_round_trip(store: CosmosContextStore) -> None:
    run = run_id()
    assert store.get(run, "a") is MISSING
    assert not store.has(run, "a")
    store.set(run, "a", {"x": [1, 2, None]})
    store.set(run, "nothing", None)
    assert store.get(run, "a") == {"x": [1, 2, None]}
    assert store.has(run, "nothing") and store.get(run, "nothing") is None
    store.delete(run, "a")
    store.delete(run, "never-set")
    assert store.get(run, "a") is MISSING
    assert store.snapshot(run) == {"nothing": None}


def test_keys_with_characters_cosmos_ids_forbid(store: CosmosContextStore) -> None:
    run = run_id()
    keys = ["a/b", "a\\b", "what?", "#tag", "_outputs.x", "100%", "é ü", "k" * 600]
    for i, key in enumerate(keys):
        store.set(run, key, i)
    assert store.snapshot(run) == {key: i for i, key in enumerate(keys)}
    assert [store.get(run, key) for key in keys] == list(range(len(keys)))


def test_runs_are_isolated(store: CosmosContextStore) -> None:
    one, two = run_id(), run_id()
    store.set(one, "k", 1)
    store.record_output(one, "n", 0, "out")
    assert store.get(two, "k") is MISSING
    assert store.snapshot(two) == {}


def test_create_run_writes_initial_keys_once(store: CosmosContextStore) -> None:
    run = run_id()
    store.create_run(run, {"a": 1, "b": {"c": 2}})
    store.set(run, "a", 10)
    store.create_run(run, {"a": 1, "b": {"c": 2}})
    assert store.snapshot(run) == {"a": 10, "b": {"c": 2}}


def test_patch_sets_and_deletes(store: CosmosContextStore) -> None:
    run = run_id()
    store.set(run, "gone", 1)
    store.patch(run, [
        PatchOp("set", "a", 1), PatchOp("set", "b", 2), PatchOp("delete", "gone"),
        PatchOp("delete", "absent"), PatchOp("set", "a", 3), PatchOp("set", "c", 4),
        PatchOp("delete", "c"),
    ])
    assert store.snapshot(run) == {"a": 3, "b": 2}


def test_record_output_is_create_if_absent(store: CosmosContextStore) -> None:
    run = run_id()
    assert store.record_output(run, "n1", 0, {"v": 1}, action="go")
    assert not store.record_output(run, "n1", 0, {"v": 2}, action="other")
    assert store.get_output(run, "n1", 0) == RecordedOutput("n1", 0, {"v": 1}, "go")
    assert store.get_output(run, "n1", 1) is None
    assert store.get(run, "_outputs.n1") == {"v": 1}
    assert store.get(run, "n1") == {"v": 1}
    assert store.has(run, "_outputs.n1")


def test_latest_iteration_output_is_shown(store: CosmosContextStore) -> None:
    run = run_id()
    for iteration in (0, 2, 1):
        store.record_output(run, "loop", iteration, f"pass {iteration}")
    assert store.get(run, "loop") == "pass 2"
    assert store.get(run, "_outputs.loop") == "pass 2"
    snap = store.snapshot(run)
    assert snap["loop"] == snap["_outputs.loop"] == "pass 2"
    assert store.get_output(run, "loop", 1) == RecordedOutput("loop", 1, "pass 1", None)


def test_last_write_wins_between_a_key_and_the_node_output_of_that_name(store: CosmosContextStore) -> None:
    run = run_id()
    store.set(run, "total", "explicit")
    assert store.get(run, "total") == "explicit"
    store.record_output(run, "total", 0, 42)
    assert store.get(run, "total") == 42
    assert store.snapshot(run) == {"total": 42, "_outputs.total": 42}
    store.set(run, "total", "written after")
    assert store.get(run, "total") == "written after"
    assert store.get(run, "_outputs.total") == 42
    assert store.snapshot(run) == {"total": "written after", "_outputs.total": 42}
    store.record_output(run, "total", 1, 43)
    assert store.get(run, "total") == 43 == store.snapshot(run)["total"]


def test_concurrent_recorders_of_one_output_have_one_winner(store: CosmosContextStore) -> None:
    run = run_id()
    with ThreadPoolExecutor(max_workers=16) as pool:
        wins = list(pool.map(lambda i: store.record_output(run, "n", 0, i), range(32)))
    assert wins.count(True) == 1
    recorded = store.get_output(run, "n", 0)
    assert recorded is not None and recorded.output == wins.index(True)


def test_100_concurrent_writers_of_different_keys_lose_none(store: CosmosContextStore) -> None:
    run = run_id()
    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(lambda i: store.set(run, f"seen.w{i}", i), range(100)))
    snap = store.snapshot(run)
    assert snap == {f"seen.w{i}": i for i in range(100)}


def _write_keys(database: str, run: str, worker: int, count: int) -> None:
    """Child process: set `count` keys of its own in the shared run."""
    store = CosmosContextStore(cosmos_support.client(), database=database)
    for i in range(count):
        store.set(run, f"p{worker}.{i}", [worker, i])


def test_concurrent_processes_writing_one_run_lose_nothing(
    store: CosmosContextStore, database: str
) -> None:
    run = run_id()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_keys, args=(database, run, w, 25)) for w in range(4)]
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=120)
        assert [proc.exitcode for proc in procs] == [0, 0, 0, 0]
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
    assert store.snapshot(run) == {f"p{w}.{i}": [w, i] for w in range(4) for i in range(25)}


def test_same_key_writers_settle_on_one_written_value(store: CosmosContextStore) -> None:
    run = run_id()
    written = [{"writer": w, "n": n} for w in range(2) for n in range(20)]
    def write_all(writer: int) -> None:
        for value in written:
            if value["writer"] == writer:
                store.set(run, "same", value)

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(write_all, range(2)))
    final = store.get(run, "same")
    assert final in [{"writer": 0, "n": 19}, {"writer": 1, "n": 19}]
    assert store.snapshot(run) == {"same": final}


def test_thousand_outputs_of_one_kib(store: CosmosContextStore) -> None:
    run = run_id()
    payload = "x" * 1024
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(
            lambda i: store.record_output(run, f"node{i}", 0, {"i": i, "p": payload}), range(1000)
        ))
    assert all(results)
    snap = store.snapshot(run)
    assert len(snap) == 2000
    assert snap["node999"] == {"i": 999, "p": payload}
    assert snap["_outputs.node0"] == {"i": 0, "p": payload}


def test_too_large_value_names_key_and_size(store: CosmosContextStore) -> None:
    run = run_id()
    big = "y" * (3 * 1024 * 1024)
    with pytest.raises(ValueTooLargeError) as info:
        store.set(run, "huge.blob", big)
    assert info.value.key == "huge.blob"
    assert info.value.size == len(big) + 2
    assert "huge.blob" in str(info.value) and str(len(big) + 2) in str(info.value)
    with pytest.raises(ValueTooLargeError, match=r"_outputs\.bignode"):
        store.record_output(run, "bignode", 0, big)
    with pytest.raises(ValueTooLargeError, match=r"in\.patch"):
        store.patch(run, [PatchOp("set", "ok", 1), PatchOp("set", "in.patch", big)])
    assert store.snapshot(run) == {}


def test_value_just_under_the_limit_is_stored(store: CosmosContextStore) -> None:
    run = run_id()
    value = "z" * (2 * 1024 * 1024 - 4096)
    store.set(run, "near.limit", value)
    assert store.get(run, "near.limit") == value


def test_delete_run_removes_everything(store: CosmosContextStore) -> None:
    run, other = run_id(), run_id()
    store.create_run(run, {"a": 1})
    store.record_output(run, "n", 0, 1)
    store.set(other, "keep", True)
    store.delete_run(run)
    assert store.snapshot(run) == {}
    assert store.get_output(run, "n", 0) is None
    assert store.snapshot(other) == {"keep": True}


def test_recording_a_completion_costs_two_requests(database: str) -> None:
    client = cosmos_support.client()
    context = CosmosContextStore(client, database=database)
    status = CosmosStatusStore(client, database=database)
    run = run_id()
    status.create({"runId": run, "blueprintId": "bp", "status": "running"})
    reset_request_counts()
    assert context.record_output(run, "n1", 0, {"ok": True})
    status.touch(run)
    counts = request_counts()
    assert counts == {"docs:create": 1, "docs:patch": 1}


def test_writers_racing_to_create_the_database_all_succeed(database: str) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        stores = list(pool.map(
            lambda _: CosmosContextStore(cosmos_support.client(), database=database), range(8)
        ))
    run = run_id()
    stores[0].set(run, "k", 1)
    assert stores[7].get(run, "k") == 1


def test_snapshot_and_outputs_in_one_query_equal_each_read_alone(store: CosmosContextStore) -> None:
    run = run_id()
    store.set(run, "k", 1)
    store.record_output(run, "a", 0, "first")
    store.record_output(run, "a", 1, "second", action="go")
    store.record_output(run, "b", 0, {"x": 1})
    reset_request_counts()
    context, outputs = store.snapshot_and_outputs(run)
    assert sum(request_counts().values()) == 1
    assert context == store.snapshot(run) == {"k": 1, "a": "second", "_outputs.a": "second", "b": {"x": 1},
                                              "_outputs.b": {"x": 1}}
    assert sorted(outputs, key=lambda o: (o.node_id, o.iteration)) == \
        sorted(store.outputs(run), key=lambda o: (o.node_id, o.iteration))
    assert len(outputs) == 3


@pytest.mark.parametrize("direct", [True, False], ids=["signed-here", "sdk"])
def test_an_output_recorded_either_way_reads_back_through_the_sdk_intact(database: str, direct: bool) -> None:
    """Outputs are created with requests flowcraft signs (FLOWCRAFT_DIRECT_COSMOS_REQUESTS, the
    default) or through the SDK: the same item either way, once."""
    store = CosmosContextStore(cosmos_support.client(), database=database, direct_requests=direct)
    run = run_id()
    output = {"text": "<a href='x'>ü & é</a> \u2603", "n": [1, 2.5, None, True]}
    reset_request_counts()
    assert store.record_output(run, "n1", 0, output, action="go", decision={"took": ["e1"]})
    assert not store.record_output(run, "n1", 0, {"other": 1})
    assert request_counts() == {"docs:create": 2}
    recorded = store.get_output(run, "n1", 0)
    assert recorded is not None and recorded.output == output and recorded.action == "go"
    assert recorded.decision == {"took": ["e1"]}
