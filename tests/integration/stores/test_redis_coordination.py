"""RedisCoordinationStore against a real Redis: idempotent joins, once-only claims, owner locks."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from flowcraft_celery.stores import redis as redis_store
from flowcraft_celery.stores.base import JoinState
from flowcraft_celery.stores.redis import RedisCoordinationStore

pytestmark = pytest.mark.integration


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    """A client of the session's Redis."""
    connection = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def key_prefix(client: redis.Redis) -> Iterator[str]:
    """A key prefix unique to the test; every key under it is deleted afterwards."""
    prefix = f"test-coord:{uuid.uuid4().hex}:"
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)


@pytest.fixture
def store(client: redis.Redis, key_prefix: str) -> RedisCoordinationStore:
    """A store over the test's prefix, with a one-hour TTL."""
    return RedisCoordinationStore(client, key_prefix, ttl_seconds=3600)


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run `work(i)` for i in range(count) on `count` threads started together; their results."""
    results: list[Any] = [None] * count
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def target(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


def test_arrival_is_recorded_once_under_redelivery(store: RedisCoordinationStore) -> None:
    first = store.arrive("run1:join@0", "a", {"n": 1})
    again = store.arrive("run1:join@0", "a", {"n": 2})
    assert first == JoinState({"a": {"n": 1}}, set())
    assert again == JoinState({"a": {"n": 1}}, set())
    both = store.arrive("run1:join@0", "b", None)
    assert both == JoinState({"a": {"n": 1}, "b": None}, set())


def test_first_word_wins_between_arrive_and_skip(store: RedisCoordinationStore) -> None:
    store.arrive("r:j@0", "came", 1)
    store.arrive("r:j@0", "gone", None, skipped=True)
    state = store.arrive("r:j@0", "came", None, skipped=True)
    assert state == JoinState({"came": 1}, {"gone"})
    state = store.arrive("r:j@0", "gone", 2)
    assert state == JoinState({"came": 1}, {"gone"})


def test_joins_are_separate_per_scope(store: RedisCoordinationStore) -> None:
    store.arrive("r:j@0", "a", 1)
    assert store.arrive("r:j@1", "b", 2) == JoinState({"b": 2}, set())


def test_values_round_trip_as_json(store: RedisCoordinationStore) -> None:
    value = {"text": "héllo 😀", "list": [1, 2.5, None, True], "nested": {"x": {"y": []}}}
    assert store.arrive("r:j@0", "a", value).arrived["a"] == value


def test_a_join_gets_its_values_once_enough_predecessors_arrived_or_were_skipped(
    store: RedisCoordinationStore,
) -> None:
    """An `all` join of three asks for values from the third: before it, the names only."""
    first = store.arrive("r:j@0", "a", {"n": 1}, values_from=3)
    second = store.arrive("r:j@0", "b", None, skipped=True, values_from=3)
    assert first == JoinState({"a": None}, set()) and second == JoinState({"a": None}, {"b"})
    third = store.arrive("r:j@0", "c", [3], values_from=3)
    assert third == JoinState({"a": {"n": 1}, "c": [3]}, {"b"})
    assert store.arrive("r:j@0", "a", "again", values_from=3) == third


def test_fifty_concurrent_arrivals_each_see_one_more_and_exactly_one_claim_wins(
    store: RedisCoordinationStore,
) -> None:
    scope = "run-c:join@0"
    states: list[JoinState] = in_threads(50, lambda i: store.arrive(scope, f"p{i}", i))
    assert sorted(len(state.arrived) for state in states) == list(range(1, 51))
    assert all(f"p{i}" in state.arrived for i, state in enumerate(states))
    complete = [i for i, state in enumerate(states) if len(state.arrived) == 50]
    assert len(complete) == 1
    final = store.arrive(scope, "p0", "redelivered")
    assert final.arrived == {f"p{i}": i for i in range(50)}
    claims: list[bool] = in_threads(50, lambda i: store.claim(scope, f"p{i}"))
    assert claims.count(True) == 1


def test_concurrent_redelivery_counts_each_predecessor_once(store: RedisCoordinationStore) -> None:
    states: list[JoinState] = in_threads(40, lambda i: store.arrive("r:j@0", f"p{i % 20}", i % 20))
    final = store.arrive("r:j@0", "p0", "late")
    assert final.arrived == {f"p{i}": i for i in range(20)}
    assert max(len(state.arrived) for state in states) == 20


def test_claim_is_for_the_first_token_and_again_for_it(store: RedisCoordinationStore) -> None:
    assert store.claim("r:j@0", "first") is True
    assert store.claim("r:j@0", "second") is False
    assert store.claim("r:j@0", "first") is True
    assert store.claim("r:j@1", "second") is True


def test_claim_expires_after_its_ttl(store: RedisCoordinationStore, client: redis.Redis) -> None:
    store.claim("r:short@0", "t", ttl=5)
    store.claim("r:default@0", "t")
    assert 0 < client.pttl(store.claim_key("r:short@0")) <= 5000
    assert 5000 < client.pttl(store.claim_key("r:default@0")) <= 3_600_000


def test_join_keys_expire(store: RedisCoordinationStore, client: redis.Redis) -> None:
    store.arrive("r:j@0", "a", 1)
    store.arrive("r:j@0", "b", None, skipped=True)
    arrived, skipped = store.join_keys("r:j@0")
    assert 0 < client.pttl(arrived) <= 3_600_000
    assert 0 < client.pttl(skipped) <= 3_600_000


def test_lock_belongs_to_its_token(store: RedisCoordinationStore) -> None:
    assert store.acquire("reconcile:run1", "owner", ttl=30) is True
    assert store.acquire("reconcile:run1", "intruder", ttl=30) is False
    assert store.release("reconcile:run1", "intruder") is False
    assert store.acquire("reconcile:run1", "intruder", ttl=30) is False
    assert store.release("reconcile:run1", "owner") is True
    assert store.release("reconcile:run1", "owner") is False
    assert store.acquire("reconcile:run1", "intruder", ttl=30) is True


def test_lock_is_reentrant_and_reacquiring_extends_it(
    store: RedisCoordinationStore, client: redis.Redis,
) -> None:
    assert store.acquire("l", "me", ttl=2) is True
    assert 0 < client.pttl(store.lock_key("l")) <= 2000
    assert store.acquire("l", "me", ttl=60) is True
    assert 2000 < client.pttl(store.lock_key("l")) <= 60_000


def test_only_one_of_many_concurrent_acquirers_gets_the_lock(store: RedisCoordinationStore) -> None:
    results: list[bool] = in_threads(30, lambda i: store.acquire("contended", f"t{i}", ttl=30))
    assert results.count(True) == 1


def test_each_operation_is_one_command(store: RedisCoordinationStore, client: redis.Redis) -> None:
    store.arrive("warm:j@0", "a", 1)
    store.claim("warm:j@0", "a")
    store.acquire("warm", "a", 5)
    store.release("warm", "a")
    before_store, before_server = store.commands, _server_commands(client)
    store.arrive("r:j@0", "a", 1)
    store.arrive("r:j@0", "b", 2, skipped=True)
    store.claim("r:j@0", "a")
    store.acquire("lock", "a", 5)
    store.release("lock", "a")
    assert store.commands - before_store == 5
    assert _server_commands(client) - before_server >= 5


def test_a_script_missing_from_the_server_is_loaded_and_run(store: RedisCoordinationStore) -> None:
    fresh = redis_store._Script(f"{redis_store._CLAIM}-- {uuid.uuid4().hex}\n")
    store._claim = fresh
    before = store.commands
    assert store.claim("r:j@0", "t") is True
    assert store.commands - before == 3
    assert store.claim("r:j@0", "u") is False
    assert store.commands - before == 4


def _server_commands(client: redis.Redis) -> int:
    """EVALSHA calls the server has answered so far."""
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_delete_scope_removes_a_runs_joins_and_claims_only(
    store: RedisCoordinationStore, client: redis.Redis, key_prefix: str,
) -> None:
    store.arrive("run-a:j@0", "x", 1)
    store.arrive("run-a:j@0", "y", None, skipped=True)
    store.claim("run-a:j@0", "x")
    store.arrive("run-b:j@0", "x", 1)
    store.acquire("run-a", "owner", 30)
    assert store.delete_scope("run-a:") == 3
    remaining = {key.decode() for key in client.scan_iter(match=f"{key_prefix}*")}
    assert remaining == {store.join_keys("run-b:j@0")[0], store.lock_key("run-a")}
    assert store.arrive("run-a:j@0", "z", 3) == JoinState({"z": 3}, set())


def test_works_with_a_decoding_client_and_from_url(key_prefix: str) -> None:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    decoding = RedisCoordinationStore(redis.Redis.from_url(url, decode_responses=True), key_prefix)
    assert decoding.arrive("r:j@0", "a", [1]) == JoinState({"a": [1]}, set())
    by_url = RedisCoordinationStore.from_url(url, key_prefix)
    assert by_url.arrive("r:j@0", "b", None, skipped=True) == JoinState({"a": [1]}, {"b"})
    assert RedisCoordinationStore(url, key_prefix).claim("r:j@0", "a") is True
