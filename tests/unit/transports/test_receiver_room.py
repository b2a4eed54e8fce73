"""A channel's prefetch room as the I/O thread reads it while the consuming thread delivers."""

from __future__ import annotations

from transports.azurequeue.inbox import Inbox
from transports.azurequeue.polling import PollSchedule
from transports.azurequeue.receiver import Consumption, Receiver


class DeliveringQoS:
    """A channel with prefetch 2 whose consuming thread hands over the inbox's deliveries just
    after the I/O thread read its count (the moment a race would over-fill the channel)."""

    prefetch_count = 2

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.unacked = 0

    def can_consume_max_estimate(self) -> int:
        estimate = self.prefetch_count - self.unacked
        taken = self.inbox.take_all()
        self.unacked += len(taken)
        self.inbox.delivered(taken)
        return estimate


def test_a_channel_whose_deliveries_move_while_its_room_is_read_is_never_given_more_than_its_prefetch() -> None:
    inbox = Inbox()
    qos = DeliveringQoS(inbox)
    receiver = Receiver(None, inbox, PollSchedule(0.1, 1.0), 10, 0.0)  # type: ignore[arg-type]
    inbox.put("q", {"n": 1}, "channel")
    inbox.put("q", {"n": 2}, "channel")
    assert receiver.room(Consumption("channel", qos, transient=False)) == 0
    assert qos.unacked == 2
    assert receiver.room(Consumption("channel", qos, transient=False)) == 0
