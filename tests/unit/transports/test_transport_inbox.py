"""The hand-off from the I/O thread to the consuming thread: order, wake-ups, counts per owner."""

from __future__ import annotations

import select
import threading
import time

from transports.azurequeue.inbox import Inbox


def test_deliveries_come_out_in_order_with_per_owner_counts() -> None:
    inbox = Inbox()
    inbox.put("q", {"n": 1}, "a")
    inbox.put("q", {"n": 2}, "b")
    inbox.put("r", {"n": 3}, "a")
    assert inbox.pending("a") == 2 and inbox.pending("b") == 1
    taken = inbox.take_all()
    assert [(q, p["n"], o) for q, p, o in taken] == [("q", 1, "a"), ("q", 2, "b"), ("r", 3, "a")]
    assert inbox.pending("a") == 2, "taken but not yet delivered must still count against the room"
    inbox.delivered(taken)
    assert inbox.pending("a") == 0 and inbox.pending("b") == 0 and inbox.take_all() == []


def test_the_descriptor_is_readable_exactly_while_deliveries_wait() -> None:
    inbox = Inbox()
    assert select.select([inbox.fileno()], [], [], 0)[0] == []
    inbox.put("q", {}, "a")
    inbox.put("q", {}, "a")
    assert select.select([inbox.fileno()], [], [], 0)[0] == [inbox.fileno()]
    inbox.take_all()
    assert select.select([inbox.fileno()], [], [], 0)[0] == []


def test_a_blocking_wait_returns_when_another_thread_puts_or_after_its_timeout() -> None:
    inbox = Inbox()
    started = time.monotonic()
    assert inbox.wait(0.05) == []
    assert time.monotonic() - started >= 0.05
    threading.Timer(0.05, inbox.put, args=("q", {"late": True}, "a")).start()
    assert [p for _, p, _ in inbox.wait(5)] == [{"late": True}]
