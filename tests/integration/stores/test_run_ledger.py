"""The run ledger's bookkeeping of successors on a real Redis: what a node adds before it sends its
successors' messages never overwrites an entry that moved on, and its re-stamp after the send
leaves alone an entry that changed meanwhile (a sleep's wake-up), so that wake-up is expected."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from flowcraft_celery.stores.ledger import RunLedger

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
    remaining = ledger.settle("r", "a@0", {"nap@0": (sent, {"node": "nap", "sent": 3.0})})
    assert remaining == 1
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
