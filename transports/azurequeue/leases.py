"""Keep received Azure queue messages invisible while the consumer holds them; settle them in parallel.

A message received with visibility timeout T reappears after T unless its invisibility is
extended. The keeper renews every held message at half its timeout from a background thread,
tracking the new pop receipt each renewal returns, and runs acks (deletes) and other
settlements on a small thread pool so the consuming thread never waits on them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from .outages import unanswered

logger = logging.getLogger(__name__)


def lost_hold(exc: Exception) -> bool:
    """Tell whether an Azure error means the message is no longer ours: deleted, or received
    again by someone else (its pop receipt changed)."""
    if isinstance(exc, ResourceNotFoundError):
        return True
    return isinstance(exc, HttpResponseError) and getattr(exc, "error_code", None) == "PopReceiptMismatch"


@dataclass(eq=False)
class Lease:
    """One received message: where it lives, its current pop receipt, and when to renew it.

    A bundle's lease is shared by its parts: `parts` maps each held part's delivery tag to its
    index and payload until the part is settled; the message goes with its last part."""

    queue: str
    client: QueueClient
    message_id: str
    pop_receipt: str
    dequeue_count: int
    blob: str | None = None
    envelope: dict[str, Any] = field(default_factory=dict)
    renew_at: float = 0.0
    settled: bool = False
    bundle: bool = False
    parts: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class LeaseKeeper:
    """Tracks held messages by delivery tag, renews their invisibility, settles them."""

    def __init__(self, visibility_timeout: int, settle_threads: int) -> None:
        self._timeout = visibility_timeout
        self._settle_threads = settle_threads
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: set[Future[None]] = set()

    def hold(self, tag: str, lease: Lease) -> None:
        """Start keeping `lease` invisible until it is settled."""
        lease.renew_at = time.monotonic() + self._timeout / 2.0
        with self._lock:
            self._leases[tag] = lease
            if self._thread is None:
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._renew_loop,
                    args=(self._stop,),
                    name="azurequeue-lease-renewer",
                    daemon=True,
                )
                self._thread.start()

    def take(self, tag: str) -> Lease | None:
        """Stop tracking the lease of `tag` and return it (None if unknown or already taken)."""
        with self._lock:
            return self._leases.pop(tag, None)

    def settle(self, lease: Lease, action: Callable[[Lease], None]) -> None:
        """Run `action` on the lease now, after any renewal in flight, at most once."""
        with lease.lock:
            if lease.settled:
                return
            lease.settled = True
            action(lease)

    def settle_later(self, lease: Lease, action: Callable[[Lease], None]) -> Future[None]:
        """Run `settle` on the thread pool and return at once."""
        return self.run_later(lambda: self.settle(lease, action))

    def run_later(self, work: Callable[[], None]) -> Future[None]:
        """Run `work` on the thread pool (a flush waits for it) and return at once."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self._settle_threads, thread_name_prefix="azurequeue-settle"
                )
            executor = self._executor
        future = executor.submit(work)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future[None]) -> None:
        """Forget a finished settlement; log it if it failed, so it is never silent."""
        with self._lock:
            self._pending.discard(future)
        exc = future.exception()
        if exc is not None:
            logger.log(logging.DEBUG if unanswered(exc) else logging.ERROR,
                       "Settling a message failed (it will be redelivered): %r", exc)

    def flush(self) -> None:
        """Wait until every settlement submitted so far has finished."""
        with self._lock:
            pending = list(self._pending)
        wait(pending)

    def _renew_loop(self, stop: threading.Event) -> None:
        """Renew due leases until `stop` is set."""
        tick = min(1.0, self._timeout / 4.0)
        while not stop.wait(tick):
            now = time.monotonic()
            with self._lock:  # a bundle's lease is held under each of its parts' tags
                due = list({id(lease): lease for lease in self._leases.values() if lease.renew_at <= now}.values())
            for lease in due:
                self._renew(lease)

    def _renew(self, lease: Lease) -> None:
        """Extend one lease's invisibility by a full timeout and record the new pop receipt."""
        with lease.lock:
            if lease.settled:
                return
            try:
                updated = lease.client.update_message(
                    lease.message_id, lease.pop_receipt, visibility_timeout=self._timeout
                )
            except AzureError as exc:
                if lost_hold(exc):
                    logger.warning(
                        "Lost hold of message %s on %s: it was redelivered before renewal",
                        lease.message_id, lease.queue,
                    )
                    lease.renew_at = float("inf")
                    return
                logger.log(logging.DEBUG if unanswered(exc) else logging.WARNING,
                           "Renewing message %s failed, will retry: %r", lease.message_id, exc)
                lease.renew_at = time.monotonic() + 1.0
                return
            lease.pop_receipt = updated.pop_receipt or lease.pop_receipt
            lease.renew_at = time.monotonic() + self._timeout / 2.0

    def close(self) -> None:
        """Stop renewing and wait for settlements in flight."""
        self._stop.set()
        with self._lock:
            executor, self._executor = self._executor, None
            thread, self._thread = self._thread, None
        if executor is not None:
            executor.shutdown(wait=True)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
