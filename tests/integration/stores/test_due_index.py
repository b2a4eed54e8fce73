"""The reconcile due index on a real Redis: a pass takes only what is due, at most its budget,
never what another pass holds; a run re-armed meanwhile is not parked; losing the index asks for
a sweep of Cosmos exactly once, resumed where it stopped."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from flowcraft_celery.stores.due import DueIndex

pytestmark = pytest.mark.integration


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    yield conn
    conn.close()


@pytest.fixture
def index(client: redis.Redis) -> Iterator[DueIndex]:
    """An index under a prefix unique to the test; its keys are deleted afterwards."""
    prefix = f"test-due:{uuid.uuid4().hex}:"
    try:
        yield DueIndex(client, prefix, "dep")
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)


def test_a_pass_takes_the_earliest_due_runs_up_to_its_budget_and_the_next_pass_the_rest(index: DueIndex) -> None:
    for i in range(5):
        index.arm(f"r{i}", 100.0 + i)
    index.arm("later", 500.0)
    first = index.take(now=200.0, limit=3, lease=60.0)
    second = index.take(now=200.0, limit=3, lease=60.0)
    assert first.runs == ["r0", "r1", "r2"]
    assert second.runs == ["r3", "r4"]  # the first pass's runs are leased, `later` is not due
    assert index.take(now=200.0, limit=3, lease=60.0).runs == []
    assert index.take(now=261.0, limit=10, lease=60.0).runs == ["r0", "r1", "r2", "r3", "r4"]  # leases ran out


def test_a_run_re_armed_after_it_was_taken_is_neither_parked_nor_put_off(index: DueIndex) -> None:
    index.arm("quiet", 10.0)
    index.arm("busy", 10.0)
    taken = index.take(now=20.0, limit=10, lease=60.0)
    index.arm("busy", 25.0)  # a node of the run touched it while the pass looked at it
    assert index.reschedule("quiet", taken.lease, None)
    assert not index.reschedule("busy", taken.lease, None)
    assert index.due_at("quiet") is None
    assert index.due_at("busy") == 25.0


def test_a_lost_index_asks_for_one_sweep_resumed_where_it_stopped(index: DueIndex, client: redis.Redis) -> None:
    assert index.sweep_position(now=1.0) == ""  # a new (or lost) index: sweep from the start
    index.sweep_moved("page-2")
    assert index.sweep_position(now=2.0) == "page-2"
    index.sweep_moved(None)
    assert index.sweep_position(now=3.0) is None  # whole again: no sweep
    index.arm_all({"a": 5.0})
    index.arm("b", 7.0)
    index.arm_all({"a": 9.0, "b": 9.0})  # a sweep's finds keep the due times the index holds
    assert (index.due_at("a"), index.due_at("b")) == (5.0, 7.0)
    client.delete(index.key, f"{index.key}:since")  # Redis lost the index
    assert index.sweep_position(now=4.0) == ""
