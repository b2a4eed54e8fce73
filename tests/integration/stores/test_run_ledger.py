"""The run ledger's bookkeeping of successors on a real Redis: what a node adds before it sends its
successors' messages never overwrites an entry that moved on, and its re-stamp after the send
leaves alone an entry that changed meanwhile (a sleep's wake-up), so that wake-up is expected."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from flowcraft_celery.stores.ledger import Lock, RunLedger
from flowcraft_celery.stores.redis import RedisCoordinationStore
from flowcraft_celery.stores.timeline import RunTimeline

pytestmark = pytest.mark.integration


@pytest.fixture
def ledger() -> Iterator[RunLedger]:
    """A ledger under a prefix unique to the test; its keys are deleted afterwards."""
    client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    prefix = f"test-ledger:{uuid.uuid4().hex}:"
    try:
        yield RunLedger(client, prefix)
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


def test_a_successor_that_moved_on_keeps_its_entry_through_the_re_stamp(ledger: RunLedger) -> None:
    ledger.begin("r", 1, {"a@0": {"node": "a", "sent": 1.0}})
    sent = {"node": "nap", "sent": 2.0}
    ledger.expect("r", {"nap@0": sent})
    woken = {"node": "nap", "sent": 2.5, "wake": True}
    ledger.update_pending("r", "nap@0", woken)  # the sleep ran before its predecessor re-stamped
    assert ledger.settle("r", "a@0", {"nap@0": (sent, {"node": "nap", "sent": 3.0})}).remaining == 1
    assert ledger.pending("r") == {"nap@0": woken}
    assert ledger.check("r", "a@0").finished


def test_an_unchanged_entry_is_re_stamped_and_an_existing_one_is_not_replaced(ledger: RunLedger) -> None:
    ledger.begin("r", 1, {"a@0": {"node": "a", "sent": 1.0}, "b@0": {"node": "b", "sent": 1.0, "attempt": 2}})
    ledger.expect("r", {"b@0": {"node": "b", "sent": 9.0}, "c@0": {"node": "c", "sent": 2.0}})
    assert ledger.pending("r")["b@0"] == {"node": "b", "sent": 1.0, "attempt": 2}  # a copy that ran before
    ledger.settle("r", "a@0", {"c@0": ({"node": "c", "sent": 2.0}, {"node": "c", "sent": 3.0})})
    assert ledger.pending("r")["c@0"] == {"node": "c", "sent": 3.0}
    ledger.settle("r", "c@0", {})
    ledger.expect("r", {"c@0": {"node": "c", "sent": 4.0}})  # finished: never pending again
    assert "c@0" not in ledger.pending("r")


def test_entering_counts_attempts_that_never_ended_until_one_settles_and_skips_finished_tokens(
        ledger: RunLedger) -> None:
    ledger.begin("r", 1, {"a@0": {"node": "a", "sent": 1.0}})
    first = ledger.enter("r", "a@0")
    assert (first.state.finished, first.state.maybe_recorded, first.attempts) == (False, False, 1)
    second = ledger.enter("r", "a@0")  # the first attempt died with its process
    assert (second.state.maybe_recorded, second.attempts) == (True, 2)
    ledger.end_attempt("r", "a@0")
    assert ledger.enter("r", "a@0").attempts == 1
    ledger.settle("r", "a@0", {})  # settling ends the attempt
    done = ledger.enter("r", "a@0")
    assert done.state.finished and done.attempts == 0
    ledger.begin("r", 2, {"b@0": {"node": "b", "sent": 1.0}})
    assert ledger.begin_attempt("r", "b@0") == 1  # what a settled attempt left was cleared by settle


def test_entering_with_the_execution_lock_takes_it_or_does_nothing_and_settling_releases_it(
        ledger: RunLedger) -> None:
    locks = RedisCoordinationStore(ledger.client, ledger._prefix)
    key = locks.lock_key("exec:r:a@0")
    ledger.begin("r", 1, {"a@0": {"node": "a", "sent": 1.0}})
    first = ledger.enter("r", "a@0", Lock(key, "one", 30))
    assert first.held and first.attempts == 1 and locks.holder("exec:r:a@0") == "one"
    other = ledger.enter("r", "a@0", Lock(key, "two", 30))  # a copy of the message while the first runs
    assert not other.held and other.attempts == 0
    assert ledger.unended_attempts("r") == {"a@0": 1} and locks.holder("exec:r:a@0") == "one"
    assert not ledger.settle("r", "a@0", {}, release=Lock(key, "two", 0)).remaining  # not its lock
    assert locks.holder("exec:r:a@0") == "one"
    ledger.begin("r", 2, {"a@0": {"node": "a", "sent": 1.0}})
    ledger.enter("r", "a@0", Lock(key, "one", 30))
    ledger.settle("r", "a@0", {}, release=Lock(key, "one", 0))
    assert locks.holder("exec:r:a@0") is None and ledger.check("r", "a@0").finished
    assert ledger.enter("r", "a@0", Lock(key, "two", 30)).state.finished  # free again: a late copy finds it done


def test_entering_begins_in_the_timeline_only_an_attempt_that_will_run(ledger: RunLedger) -> None:
    timeline = RunTimeline(ledger.client, ledger._prefix)
    key = RedisCoordinationStore(ledger.client, ledger._prefix).lock_key("exec:r:a@0")

    def enter(owner: str, limit: int = 3) -> bool:
        _, write = timeline.beginning("r", "a@0", "step", 1, "w1", 0.5)
        entered = ledger.enter("r", "a@0", Lock(key, owner, 30), write, limit)
        return entered.begun

    ledger.begin("r", 1, {"a@0": {"node": "a", "sent": 1.0}})
    assert enter("one") and timeline.entries("r")["a@0"]["state"] == "running"
    assert timeline.counters()["started|step"] == 1
    assert not enter("two")  # another holds the lock: nothing begun
    ledger.client.delete(key)
    assert not enter("two")  # the first attempt may have recorded an output: it is looked up first
    ledger.begin("r", 2, {"a@0": {"node": "a", "sent": 1.0}})
    ledger.client.delete(key)
    assert not enter("three", limit=0)  # over the crash limit: the run fails instead
    assert timeline.counters()["started|step"] == 1


def test_entering_for_a_message_counts_only_when_the_token_is_pending_as_it_names_it(ledger: RunLedger) -> None:
    key = RedisCoordinationStore(ledger.client, ledger._prefix).lock_key("exec:r:a@0")
    ledger.begin("r", 1, {"a@0": {"run": "r", "bp": "flow", "ver": None, "node": "a"},
                          "b@0": {"run": "r", "bp": "flow", "ver": "2", "node": "b"}})
    stale = ledger.enter("r", "a@0", Lock(key, "one", 30), expect=("flow", "1"))  # another version's message
    assert stale.held and stale.attempts == 0 and ledger.unended_attempts("r") == {}
    ledger.client.delete(key)
    assert ledger.enter("r", "a@0", Lock(key, "one", 30), expect=("flow", None)).attempts == 1
    assert ledger.enter("r", "b@0", Lock(key + "b", "one", 30), expect=("flow", "2")).attempts == 1
    assert ledger.enter("r", "c@0", Lock(key + "c", "one", 30), expect=("flow", "2")).attempts == 0  # not due
    lost = ledger.enter("gone", "a@0", Lock(key + "d", "one", 30), expect=("flow", None))
    assert lost.state.lost and lost.attempts == 0


def test_settling_writes_the_attempts_end_to_the_timeline_and_keeps_re_stamping(ledger: RunLedger) -> None:
    timeline = RunTimeline(ledger.client, ledger._prefix)
    ledger.begin("r", 1, {"a@0": {"node": "a", "sent": 1.0}})
    started = timeline.begin("r", "a@0", "step", 1, "w1")
    ledger.expect("r", {"b@0": {"node": "b", "sent": 2.0}})
    settled = ledger.settle("r", "a@0", {"b@0": ({"node": "b", "sent": 2.0}, {"node": "b", "sent": 3.0})},
                            end=started.ending("succeeded"))
    assert settled.remaining == 1 and ledger.pending("r") == {"b@0": {"node": "b", "sent": 3.0}}
    assert timeline.entries("r")["a@0"]["state"] == "succeeded"
    assert timeline.counters()["succeeded|step"] == 1


def test_entering_a_halted_or_lost_run_counts_nothing(ledger: RunLedger) -> None:
    lost = ledger.enter("gone", "a@0")
    assert lost.state.lost and lost.attempts == 0
    ledger.begin("r", 1, {"a@0": {"node": "a", "sent": 1.0}})
    ledger.halt("r", "cancelled")
    halted = ledger.enter("r", "a@0")
    assert halted.state.halted == "cancelled" and halted.attempts == 0
    assert ledger.begin_attempt("r", "a@0") == 1


def test_expiring_a_run_gives_every_key_the_retention(ledger: RunLedger) -> None:
    ledger.begin("r", 1, {"a@0": {"node": "a", "sent": 1.0}})
    ledger.enter("r", "a@0")
    ledger.settle("r", "a@0", {"b@0": ({"node": "b"}, {"node": "b", "sent": 2.0})})
    ledger.expect("r", {"b@0": {"node": "b", "sent": 2.0}})
    ledger.expire_run("r", 100)
    client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    ttls = {key: client.ttl(key) for key in ledger.keys("r") if client.exists(key)}
    client.close()
    assert len(ttls) >= 5 and all(0 < ttl <= 100 for ttl in ttls.values()), ttls
    assert any(key.endswith(":expires") for key in ttls)


def test_one_settle_per_touch_interval_is_told_to_touch_the_run_and_none_right_after_it_began(
        ledger: RunLedger) -> None:
    ledger.begin("r", 1, {f"n{i}@0": {"node": f"n{i}"} for i in range(5)}, touched_for=0.3)
    assert not ledger.settle("r", "n0@0", {}, touch_every=0.3).touch  # the run was just created
    time.sleep(0.4)
    told = [ledger.settle("r", f"n{i}@0", {}, touch_every=0.3) for i in range(1, 4)]
    assert [s.touch for s in told] == [True, False, False]
    assert [s.remaining for s in told] == [3, 2, 1]
    assert not ledger.settle("r", "n4@0", {}).touch  # a caller that does not touch
