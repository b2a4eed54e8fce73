"""Threads kept to run a caller's publish with a time limit, reused from one start to the next.

A start bounds its publish by running it in another thread and waiting at most the start timeout
(the SDK's own retries against an unreachable endpoint take minutes). A new thread per start would
also open a new connection to the queue each time (the transport keeps one per thread), so the
threads are kept: an idle one takes the next publish, a new one starts only when every kept one
is busy (several callers at once, or a publish still hanging after its caller gave up), a
thread idle for `IDLE_SECONDS` ends, and a forked child starts with none.
"""

from __future__ import annotations

import contextvars
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from flowcraft_celery.errors import FlowcraftError

T = TypeVar("T")

#: A kept thread with nothing to do for this long ends.
IDLE_SECONDS = 60.0


class SendTimeout(FlowcraftError, TimeoutError):
    """The publish did not return within the time given (it goes on in its thread)."""


class _Sender:
    """One kept thread and the calls handed to it."""

    def __init__(self, senders: Senders) -> None:
        self._senders = senders
        self.calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="flowcraft-start-publish", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                call = self.calls.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                if self._senders.retire(self):
                    return
                continue  # taken just now: its call is on the way
            call()
            self._senders.release(self)


class Senders:
    """The kept threads of a process (see the module doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Sender] = []

    def run(self, function: Callable[[], T], timeout: float) -> T:
        """`function()` in a kept thread, in the caller's context (its trace span, its log scope);
        its result or its exception, or SendTimeout after `timeout` seconds."""
        future: Future[T] = Future()
        context = contextvars.copy_context()

        def call() -> None:
            try:
                future.set_result(context.run(function))
            except BaseException as exc:  # reported in the caller's thread
                future.set_exception(exc)

        self._take().calls.put(call)
        try:
            return future.result(timeout)
        except TimeoutError:
            if future.done():  # the function's own TimeoutError, or it has just returned
                return future.result()
            raise SendTimeout(f"no answer within {timeout:g} s") from None

    def _take(self) -> _Sender:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return _Sender(self)

    def release(self, sender: _Sender) -> None:
        """`sender` finished its call and waits for the next."""
        with self._lock:
            self._idle.append(sender)

    def forget(self) -> None:
        """Drop every kept thread: in a forked child they do not exist."""
        self._lock = threading.Lock()
        self._idle = []

    def retire(self, sender: _Sender) -> bool:
        """Whether idle `sender` may end (False: a caller has just taken it)."""
        with self._lock:
            if sender in self._idle:
                self._idle.remove(sender)
                return True
            return False


#: The kept threads of this process.
SENDERS = Senders()
os.register_at_fork(after_in_child=SENDERS.forget)
