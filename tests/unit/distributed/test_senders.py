"""The kept threads that bound a start's publish: reused, bounded in time, and safe across a fork."""

from __future__ import annotations

import contextvars
import os
import threading
import time

import pytest

from flowcraft_celery.distributed.runs.senders import Senders, SendTimeout

scope: contextvars.ContextVar[str] = contextvars.ContextVar("scope", default="none")


def test_calls_in_a_row_run_in_one_kept_thread_in_the_callers_context() -> None:
    senders = Senders()
    scope.set("run-1")
    seen = [senders.run(lambda: (threading.get_ident(), scope.get()), 5) for _ in range(5)]
    assert len({ident for ident, _ in seen}) == 1, "each call started a thread of its own"
    assert seen[0][0] != threading.get_ident()
    assert {name for _, name in seen} == {"run-1"}


def test_an_error_reaches_the_caller_and_the_thread_stays_usable() -> None:
    senders = Senders()

    def fail() -> None:
        raise ConnectionRefusedError("no broker on 127.0.0.1:1")

    with pytest.raises(ConnectionRefusedError, match="no broker"):
        senders.run(fail, 5)
    assert senders.run(lambda: 7, 5) == 7


def test_a_hanging_call_times_out_and_the_next_call_does_not_wait_for_it() -> None:
    senders = Senders()
    release = threading.Event()
    began = time.monotonic()
    with pytest.raises(SendTimeout):
        senders.run(release.wait, 0.2)
    assert 0.2 <= time.monotonic() - began < 2
    began = time.monotonic()
    assert senders.run(lambda: "next", 5) == "next"
    assert time.monotonic() - began < 1, "the next call queued behind the hanging one"
    release.set()


def test_concurrent_callers_each_get_a_thread() -> None:
    senders = Senders()
    both = threading.Barrier(2, timeout=5)
    results: list[int] = []

    def call() -> None:
        results.append(senders.run(lambda: both.wait() + 10, 5))

    callers = [threading.Thread(target=call) for _ in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(10)
    assert sorted(results) == [10, 11]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_publishes_in_threads_of_its_own() -> None:
    from flowcraft_celery.distributed.runs.senders import SENDERS

    assert SENDERS.run(lambda: 1, 5) == 1  # the parent now keeps a thread
    pid = os.fork()
    if pid == 0:
        try:
            code = 0 if SENDERS.run(lambda: 2, 5) == 2 else 1
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_thread_idle_too_long_ends_and_the_next_call_still_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowcraft_celery.distributed.runs import senders as module

    monkeypatch.setattr(module, "IDLE_SECONDS", 0.05)
    senders = Senders()
    first = senders.run(threading.current_thread, 5)
    first.join(5)
    assert not first.is_alive(), "an idle kept thread never ended"
    second = senders.run(threading.current_thread, 5)
    assert second is not first and second.is_alive()
