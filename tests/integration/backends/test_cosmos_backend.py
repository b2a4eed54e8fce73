"""The `cosmos://` Celery result backend against the emulator, in-process and with a real worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from celery import Celery, chain, chord, group, states
from celery.exceptions import BackendStoreError, ImproperlyConfigured

from flowcraft_celery.backends.cosmos import CosmosBackend
from tests.integration.stores import cosmos_support

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def database(services_env: dict[str, str]) -> Iterator[str]:
    """A throwaway results database."""
    with cosmos_support.temp_database("results") as name:
        yield name


def make_app(database: str, **conf: object) -> Celery:
    """A broker-less Celery app whose results go to `cosmos://` in `database`."""
    app = Celery("cosmos-backend-test", set_as_current=False)
    app.conf.update(result_backend="cosmos://", cosmos_database=database, **conf)
    return app


def test_backend_is_found_by_url_and_uses_settings(database: str) -> None:
    app = make_app(database, cosmos_results_container="my_results")
    backend = app.backend
    assert isinstance(backend, CosmosBackend)
    backend.store_result("t1", 1, states.SUCCESS)
    props = cosmos_support.client().get_database_client(database) \
        .get_container_client("my_results").read()
    assert props["partitionKey"]["paths"] == ["/id"]
    assert props["defaultTtl"] == -1


def test_url_with_account_key_and_masked_uri(database: str) -> None:
    key = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU9DDJf5/2oMqLl6JVXUEHnCYqC7gsXzlzUm7xzy2Pp1FHpWw=="
    quote_key = quote(key, safe="")
    url = f"cosmos://:{quote_key}@127.0.0.1:8081"
    app = Celery("cosmos-url-test", set_as_current=False)
    app.conf.update(result_backend=url, cosmos_database=database)
    backend = app.backend
    backend.store_result("t-url", "via url", states.SUCCESS)
    assert app.AsyncResult("t-url").get(timeout=5) == "via url"
    assert quote_key not in backend.as_uri()
    assert backend.as_uri(include_password=True) == url


def test_url_with_the_account_key_as_azure_shows_it(database: str) -> None:
    """The key pasted from the portal (base64 with / and +), no percent-encoding."""
    key = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU9DDJf5/2oMqLl6JVXUEHnCYqC7gsXzlzUm7xzy2Pp1FHpWw=="
    url = f"cosmos://:{key}@127.0.0.1:8081"
    app = Celery("cosmos-raw-key-test", set_as_current=False)
    app.conf.update(result_backend=url, cosmos_database=database)
    app.backend.store_result("t-raw-key", "raw key", states.SUCCESS)
    assert app.AsyncResult("t-raw-key").get(timeout=5) == "raw key"
    assert key not in app.backend.as_uri() and app.backend.as_uri() == "cosmos://:**@127.0.0.1:8081"


def test_bad_urls_and_connection_strings_are_named(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = Celery("cosmos-bad-url", set_as_current=False)
    with pytest.raises(ImproperlyConfigured, match="cosmos://"):
        CosmosBackend(app=app, url="cosmos://127.0.0.1:8081")
    monkeypatch.setenv("AZURE_COSMOS_CONNECTION_STRING", "AccountEndpoint=https://h:1/;AccountKey=;")
    with pytest.raises(ImproperlyConfigured, match="AccountKey"):
        CosmosBackend(app=app, url="cosmos://")


def test_state_get_forget(database: str) -> None:
    app = make_app(database)
    result = app.AsyncResult("task-a")
    assert result.state == states.PENDING
    app.backend.mark_as_started("task-a")
    assert result.state == states.STARTED
    app.backend.mark_as_done("task-a", {"answer": 42})
    assert result.state == states.SUCCESS
    assert result.get(timeout=5) == {"answer": 42}
    result.forget()
    assert app.AsyncResult("task-a").state == states.PENDING


def test_failure_is_raised_by_get(database: str) -> None:
    app = make_app(database)
    app.backend.mark_as_failure("task-f", ValueError("boom"))
    result = app.AsyncResult("task-f")
    assert result.state == states.FAILURE
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=5)


def test_group_results_are_saved_and_restored(database: str) -> None:
    app = make_app(database)
    ids = [f"g-{i}" for i in range(5)]
    for i, task_id in enumerate(ids):
        app.backend.mark_as_done(task_id, i * i)
    saved = app.GroupResult("grp-1", [app.AsyncResult(t) for t in ids])
    saved.save()
    restored = app.GroupResult.restore("grp-1")
    assert restored is not None
    assert restored.get(timeout=5) == [0, 1, 4, 9, 16]
    restored.delete()
    assert app.GroupResult.restore("grp-1") is None


def test_pickle_serializer_bytes_round_trip(database: str) -> None:
    app = make_app(database, result_serializer="pickle", result_accept_content=["pickle"])
    app.backend.mark_as_done("task-p", {1, 2, 3})
    assert app.AsyncResult("task-p").get(timeout=5) == {1, 2, 3}


def test_result_expires_becomes_item_ttl(database: str) -> None:
    app = make_app(database, result_expires=2)
    app.backend.mark_as_done("task-ttl", "short-lived")
    item = app.backend.container.read_item("celery-task-meta-task-ttl", "celery-task-meta-task-ttl")
    assert item["ttl"] == 2
    assert app.AsyncResult("task-ttl").state == states.SUCCESS
    time.sleep(3.2)
    assert app.AsyncResult("task-ttl").state == states.PENDING


def test_result_too_large_for_an_item_is_refused(database: str) -> None:
    app = make_app(database)
    with pytest.raises(BackendStoreError, match="task-big"):
        app.backend.mark_as_done("task-big", "x" * (3 * 1024 * 1024))


def test_incr_is_atomic_across_threads(database: str) -> None:
    app = make_app(database)
    backend = app.backend
    with ThreadPoolExecutor(max_workers=10) as pool:
        values = list(pool.map(lambda _: backend.incr("chord-unlock-c1"), range(50)))
    assert sorted(values) == list(range(1, 51))
    backend.delete("chord-unlock-c1")
    assert backend.incr("chord-unlock-c1") == 1


def test_storing_and_polling_never_wait_on_a_missing_item(database: str) -> None:
    """A missing item costs a failed read (on the emulator 0.5 s): stores and polls pay none."""
    app = make_app(database)
    backend = app.backend
    ids = [f"t-{uuid.uuid4().hex}" for _ in range(20)]
    started = time.monotonic()
    for task_id in ids:
        backend.store_result(task_id, 1, states.STARTED)
        backend.store_result(task_id, 2, states.SUCCESS)
    assert time.monotonic() - started < 3
    pending = app.AsyncResult(f"t-{uuid.uuid4().hex}")
    started = time.monotonic()
    assert [pending.state for _ in range(20)] == [states.PENDING] * 20
    assert time.monotonic() - started < 2
    assert [app.AsyncResult(task_id).get(timeout=5) for task_id in ids] == [2] * 20


def test_a_stored_success_is_never_overwritten(database: str) -> None:
    app = make_app(database)
    backend = app.backend
    backend.store_result("t-kept", 1, states.SUCCESS)
    backend.mark_as_failure("t-kept", ValueError("late duplicate"))
    backend.mark_as_revoked("t-kept")
    assert app.AsyncResult("t-kept").get(timeout=5) == 1
    # another process that never saw it (no Redis marks) keeps it too
    redis.Redis.from_url(os.environ["REDIS_URL"]).delete(backend.index.key(backend.get_key_for_task("t-kept")))
    make_app(database).backend.mark_as_failure("t-kept", ValueError("later"))
    assert make_app(database).AsyncResult("t-kept").state == states.SUCCESS
    # a result written behind the index's back (Redis says absent) is found within a minute at most,
    # and at once by a process without the absent mark
    backend.mark_as_failure("t-failed", ValueError("x"))
    assert app.AsyncResult("t-failed").state == states.FAILURE


@pytest.fixture
def worker(database: str, tmp_path: Path) -> Iterator[tuple[Celery, Path]]:
    """A real `celery worker` (prefork, 4 processes) on its own Redis queue, stopped after.

    Yields a client app sending to that queue by task name, and the worker's log file.
    """
    queue = f"cosmos-test-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, FLOWCRAFT_TEST_QUEUE=queue, FLOWCRAFT_TEST_COSMOS_DATABASE=database)
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.integration.backends.cosmos_app", "worker",
             "-Q", queue, "-c", "4", "-l", "INFO", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-n", f"{queue}@%h"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        app = make_app(database, broker_url=os.environ["REDIS_URL"], task_default_queue=queue)
        deadline = time.monotonic() + 60
        while b"ready." not in log.read_bytes():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield app, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_worker_results_groups_and_failures(worker: tuple[Celery, Path]) -> None:
    app, _ = worker
    result = app.signature("cosmos_app.add", (2, 3)).delay()
    assert result.get(timeout=60) == 5
    assert result.state == states.SUCCESS
    result.forget()
    assert app.AsyncResult(result.id).state == states.PENDING
    failed = app.signature("cosmos_app.fail", ("kaboom",)).delay()
    with pytest.raises(ValueError, match="kaboom"):
        failed.get(timeout=60)
    assert failed.state == states.FAILURE
    grouped = group(app.signature("cosmos_app.add", (i, i)) for i in range(10)).apply_async()
    assert grouped.get(timeout=60) == [2 * i for i in range(10)]


def test_chord_of_50_runs_its_callback_once(worker: tuple[Celery, Path]) -> None:
    app, log = worker
    counter_key = f"cosmos-test-callback-{uuid.uuid4().hex}"
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    header = [app.signature("cosmos_app.add", (i, 1)) for i in range(50)]
    try:
        result = chord(header)(app.signature("cosmos_app.count_and_sum", (counter_key,)))
        assert result.get(timeout=120) == sum(range(1, 51))
        time.sleep(2)
        assert int(client.get(counter_key) or 0) == 1
        worker_log = log.read_bytes()
        assert worker_log.count(b"Task cosmos_app.add[") >= 50
        assert b"chord_unlock" not in worker_log
    finally:
        client.delete(counter_key)


def test_nested_chords_and_groups_in_a_header_complete(worker: tuple[Celery, Path]) -> None:
    app, _ = worker
    def add(x: int, y: int) -> Any:
        return app.signature("cosmos_app.add", (x, y))

    def collect() -> Any:
        return app.signature("cosmos_app.collect")

    nested = chord([chord([add(1, 1), add(2, 2)], collect()), add(3, 3)], collect())
    assert nested.apply_async().get(timeout=60) == [[2, 4], 6]
    # Celery flattens a group in a chord header (its Redis backend gives the same)
    with_group = chord([group(add(1, 1), add(2, 2)), add(3, 3)], collect())
    assert sorted(with_group.apply_async().get(timeout=60)) == [2, 4, 6]
    wide = chord([add(i, 0) for i in range(200)], app.signature("cosmos_app.collect"))
    assert wide.apply_async().get(timeout=120) == list(range(200))
    # a header chain that fails: get() raises its own exception (as on Redis), not the ChordError
    failing = chord([chain(add(1, 1), app.signature("cosmos_app.fail", ("boom",), immutable=True), add(2, 2))],
                    collect())
    with pytest.raises(ValueError, match="boom"):
        failing.apply_async().get(timeout=60)
