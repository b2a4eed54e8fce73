"""Polling backoff: immediate when busy, geometric up to the cap when idle."""

from __future__ import annotations

from transports.azurequeue.polling import PollSchedule


def test_new_queue_is_due_at_once() -> None:
    schedule = PollSchedule(0.1, 8.0)
    assert schedule.due(["a"], now=0.0) == "a"


def test_empty_polls_double_the_wait_up_to_the_maximum() -> None:
    schedule = PollSchedule(0.1, 8.0)
    schedule.was_empty("a", 0.0)
    schedule.got_messages("a", 100.0, full=True)
    waits = []
    now = 100.0
    for _ in range(10):
        schedule.was_empty("a", now)
        waits.append(round(schedule.state("a").next_at - now, 3))
        now = schedule.state("a").next_at
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 8.0, 8.0, 8.0]


def test_a_young_consumer_waits_at_most_a_quarter_of_its_age() -> None:
    schedule = PollSchedule(0.1, 8.0)
    now = 0.0
    polls = []
    while now < 12.0:
        schedule.was_empty("reply", now)
        wait = schedule.state("reply").next_at - now
        assert wait <= max(0.1, now / 4) + 1e-9
        polls.append(now)
        now += wait
    assert polls[-1] > 9.0


def test_full_batch_polls_again_at_once_partial_after_the_minimum() -> None:
    schedule = PollSchedule(0.1, 8.0)
    for _ in range(6):
        schedule.was_empty("a", 0.0)
    schedule.got_messages("a", 10.0, full=True)
    assert schedule.state("a").interval == 0.0
    assert schedule.due(["a"], 10.0) == "a"
    schedule.got_messages("a", 10.0, full=False)
    assert schedule.due(["a"], 10.05) is None
    assert schedule.due(["a"], 10.1) == "a"
    schedule.was_empty("a", 10.1)
    assert schedule.state("a").next_at == 10.2



def test_the_queue_waiting_longest_goes_first_and_wake_resets() -> None:
    schedule = PollSchedule(0.1, 8.0)
    schedule.was_empty("a", 0.0)
    schedule.was_empty("b", 0.05)
    assert schedule.due(["a", "b"], 1.0) == "a"
    assert schedule.next_time(["a", "b"]) == 0.1
    for _ in range(8):
        schedule.was_empty("c", 0.0)
    schedule.wake("c", 1.0)
    assert schedule.due(["c"], 1.0) == "c"


def test_with_signals_a_partial_or_empty_poll_waits_the_safety_interval() -> None:
    schedule = PollSchedule(0.1, 8.0, signalled=True)
    schedule.got_messages("a", 10.0, full=False)
    assert schedule.when("a") == 18.0
    schedule.wake("a", 11.0)
    assert schedule.due(["a"], 11.0) == "a"
    schedule.was_empty("a", 11.0)
    assert schedule.when("a") == 19.0
    schedule.got_messages("a", 12.0, full=True)
    assert schedule.due(["a"], 12.0) == "a"


def test_an_expected_poll_that_finds_nothing_is_retried_a_few_times_then_dropped() -> None:
    schedule = PollSchedule(0.1, 8.0, signalled=True)
    schedule.was_empty("a", 0.0)
    schedule.expect("a", 3.0)
    assert schedule.when("a") == 3.0
    now, retries = 3.0, []
    while schedule.when("a") < 8.0:
        now = schedule.when("a")
        schedule.was_empty("a", now)
        retries.append(round(now, 2))
    assert retries == [3.0, 3.05, 3.2, 3.6, 4.6]


def test_an_expected_poll_that_finds_the_message_is_done_and_one_past_due_can_be_passed_on() -> None:
    schedule = PollSchedule(0.1, 8.0, signalled=True)
    schedule.was_empty("a", 0.0)
    schedule.expect("a", 2.0)
    schedule.got_messages("a", 2.0, full=False)
    assert schedule.when("a") == 10.0
    schedule.expect("a", 11.0)
    assert schedule.take_expected("a", 12.0) == 1
    assert schedule.when("a") == 10.0
