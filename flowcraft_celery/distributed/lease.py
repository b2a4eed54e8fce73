"""A lock held for as long as a block runs: short TTL, renewed in the background.

If the holder dies, the lock lapses within one TTL, so a redelivered message is not kept
waiting for a long fixed expiry; while the holder lives, a renewal thread keeps it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from flowcraft_celery.stores.base import CoordinationStore

#: Seconds a lock outlives a holder that stopped renewing it.
LEASE_SECONDS = 30.0


@contextmanager
def lease(store: CoordinationStore, name: str, ttl: float = LEASE_SECONDS) -> Iterator[bool]:
    """Hold lock `name` while the block runs; yields False (holding nothing) if another owns it."""
    owner = uuid.uuid4().hex
    if not store.acquire(name, owner, ttl):
        yield False
        return
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl / 3):
            store.acquire(name, owner, ttl)

    keeper = threading.Thread(target=renew, name=f"lease-{name}", daemon=True)
    keeper.start()
    try:
        yield True
    finally:
        stop.set()
        keeper.join(timeout=ttl)
        store.release(name, owner)
