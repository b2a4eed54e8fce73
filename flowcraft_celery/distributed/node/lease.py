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


def take(store: CoordinationStore, name: str, owner: str, ttl: float) -> bool:
    """Acquire lock `name` for `owner`, taking it over from a dead holder on this host."""
    if store.acquire(name, owner, ttl):
        return True
    holder = store.holder(name)
    if _dead_here(holder) and holder is not None:
        store.release(name, holder)
        return store.acquire(name, owner, ttl)
    return False


@contextmanager
def lease(store: CoordinationStore, name: str, ttl: float = LEASE_SECONDS,
          on_renew: Callable[[], None] | None = None) -> Iterator[bool]:
    """Hold lock `name` while the block runs; yields False (holding nothing) if another owns it."""
    owner = _owner()
    if not take(store, name, owner, ttl):
        yield False
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
    try:
        yield True
    finally:
        stop.set()
        keeper.join(timeout=ttl)
        try:
            store.release(name, owner)
        except Exception as exc:
            logger.log(log_level(exc, logging.WARNING), "lease %s: release failed (%s); it lapses within %s s",
                       name, exc, ttl)
