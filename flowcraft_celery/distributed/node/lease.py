"""A lock held for as long as a block runs: short TTL, renewed in the background.

If the holder dies, the lock lapses within one TTL, so a redelivered message is not kept
waiting for a long fixed expiry; while the holder lives, the process's renewal thread keeps it
(and calls `on_renew`, with which a long-running node keeps its run from looking stalled). One
thread per process renews every lease it holds, started once: a thread started and joined per
node cost more CPU than the node's own engine work. The holder's
name carries its host and process id: a holder on this host whose process is gone (a worker
process killed while running the node) is taken over at once instead of after the TTL.
A renewal or release that fails (Redis unreachable for a moment) is logged, never raised.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flowcraft_celery.stores.base import CoordinationStore
from flowcraft_celery.stores.guard import log_level

logger = logging.getLogger("flowcraft.lease")

#: Seconds a lock outlives a holder that stopped renewing it.
LEASE_SECONDS = 30.0


def _owner() -> str:
    """A unique holder name: `<host>:<pid>:<random>`."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"


def _dead_here(holder: str | None) -> bool:
    """Whether `holder` names a process on this host that no longer exists."""
    if holder is None or holder.count(":") < 2:
        return False
    host, pid, _ = holder.rsplit(":", 2)
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def take(store: CoordinationStore, name: str, owner: str, ttl: float,
         acquire: Callable[[str, float], bool] | None = None) -> bool:
    """Acquire lock `name` for `owner` (with `acquire(owner, ttl)` when given, e.g. a script that
    takes it along with other work), taking it over from a dead holder on this host."""
    def first() -> bool:
        return acquire(owner, ttl) if acquire is not None else store.acquire(name, owner, ttl)

    if first():
        return True
    holder = store.holder(name)
    if _dead_here(holder) and holder is not None:
        store.release(name, holder)
        return first()
    return False


class _Renewal:
    """One held lock's renewals: every `ttl / 3` seconds until stopped."""

    def __init__(self, store: CoordinationStore, name: str, owner: str, ttl: float,
                 on_renew: Callable[[], None] | None) -> None:
        self.store, self.name, self.owner, self.ttl, self.on_renew = store, name, owner, ttl, on_renew
        self.every = ttl / 3
        self.stopped = False
        self._lock = threading.Lock()

    def renew(self) -> None:
        """Take the lock again for another TTL and call `on_renew`, unless stopped meanwhile."""
        with self._lock:
            if self.stopped:
                return
            try:
                self.store.acquire(self.name, self.owner, self.ttl)
                if self.on_renew is not None:
                    self.on_renew()
            except Exception as exc:
                logger.log(log_level(exc, logging.WARNING, logging.DEBUG), "lease %s: renewal failed (%s); retrying",
                           self.name, exc)

    def stop(self) -> None:
        """No renewal after this returns (one under way is waited for)."""
        with self._lock:
            self.stopped = True


class _Renewer:
    """The process's renewal thread and its schedule (a heap of due times), started on first use
    in each process: a forked pool process starts afresh (`forked`), as it inherits no thread."""

    def __init__(self) -> None:
        self.forked()

    def forked(self) -> None:
        """Forget the parent's thread, schedule and lock (in a child right after a fork)."""
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, _Renewal]] = []
        self._seq = itertools.count()
        self._pid = 0

    def add(self, renewal: _Renewal) -> None:
        """Renew `renewal` from `renewal.every` seconds from now on."""
        with self._cond:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="lease-renewer", daemon=True).start()
            entry = (time.monotonic() + renewal.every, next(self._seq), renewal)
            heapq.heappush(self._due, entry)
            if self._due[0] is entry:  # due before all others: the thread must wait less (else no wake-up)
                self._cond.notify()

    def _next(self) -> _Renewal:
        """Wait for the next renewal due (stopped ones are dropped on the way)."""
        with self._cond:
            while True:
                if not self._due:
                    self._cond.wait()
                    continue
                at, _, renewal = self._due[0]
                wait = at - time.monotonic()
                if renewal.stopped or wait <= 0:
                    heapq.heappop(self._due)
                    if not renewal.stopped:
                        return renewal
                else:
                    self._cond.wait(wait)

    def _run(self) -> None:
        while True:
            renewal = self._next()
            renewal.renew()
            if not renewal.stopped:
                with self._cond:
                    heapq.heappush(self._due, (time.monotonic() + renewal.every, next(self._seq), renewal))


_RENEWER = _Renewer()
os.register_at_fork(after_in_child=_RENEWER.forked)


class Held:
    """What `lease` yields: true while the lock is held; its owner, and a way to say that the
    block released it itself (in a script that does more, so the lease sends no release)."""

    def __init__(self, owner: str, held: bool, renewal: _Renewal | None = None) -> None:
        self.owner = owner
        self.held = held
        self.released = False
        self._renewal = renewal

    def __bool__(self) -> bool:
        return self.held

    def stop_renewing(self) -> None:
        """Stop renewing now (before a release made elsewhere, so no renewal can take the lock
        again afterwards)."""
        if self._renewal is not None:
            self._renewal.stop()


@contextmanager
def lease(store: CoordinationStore, name: str, ttl: float = LEASE_SECONDS,
          on_renew: Callable[[], None] | None = None,
          acquire: Callable[[str, float], bool] | None = None) -> Iterator[Held]:
    """Hold lock `name` while the block runs; yields a false `Held` (holding nothing) if another
    owns it. `acquire(owner, ttl)` takes it in place of `store.acquire` the first time; a block
    that released it itself sets `released` (after `stop_renewing`)."""
    owner = _owner()
    if not take(store, name, owner, ttl, acquire):
        yield Held(owner, False)
        return
    renewal = _Renewal(store, name, owner, ttl, on_renew)
    _RENEWER.add(renewal)
    held = Held(owner, True, renewal)
    try:
        yield held
    finally:
        held.stop_renewing()
        if not held.released:
            try:
                store.release(name, owner)
            except Exception as exc:
                logger.log(log_level(exc, logging.WARNING), "lease %s: release failed (%s); it lapses within %s s",
                           name, exc, ttl)
