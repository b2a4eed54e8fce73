"""A lock held for as long as a block runs: short TTL, renewed in the background.

If the holder dies, the lock lapses within one TTL, so a redelivered message is not kept
waiting for a long fixed expiry; while the holder lives, a renewal thread keeps it (and calls
`on_renew`, with which a long-running node keeps its run from looking stalled). The holder's
name carries its host and process id: a holder on this host whose process is gone (a worker
process killed while running the node) is taken over at once instead of after the TTL.
A renewal or release that fails (Redis unreachable for a moment) is logged, never raised.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
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


class Held:
    """What `lease` yields: true while the lock is held; its owner, and a way to say that the
    block released it itself (in a script that does more, so the lease sends no release)."""

    def __init__(self, owner: str, held: bool, stop: threading.Event | None = None,
                 keeper: threading.Thread | None = None) -> None:
        self.owner = owner
        self.held = held
        self.released = False
        self._stop = stop
        self._keeper = keeper

    def __bool__(self) -> bool:
        return self.held

    def stop_renewing(self) -> None:
        """Stop the renewal thread now (before a release made elsewhere, so it cannot take the
        lock again afterwards)."""
        if self._stop is not None:
            self._stop.set()
        if self._keeper is not None and self._keeper is not threading.current_thread():
            self._keeper.join(timeout=LEASE_SECONDS)


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
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl / 3):
            try:
                store.acquire(name, owner, ttl)
                if on_renew is not None:
                    on_renew()
            except Exception as exc:
                logger.log(log_level(exc, logging.WARNING, logging.DEBUG), "lease %s: renewal failed (%s); retrying",
                           name, exc)

    keeper = threading.Thread(target=renew, name=f"lease-{name}", daemon=True)
    keeper.start()
    held = Held(owner, True, stop, keeper)
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
