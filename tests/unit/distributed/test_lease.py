"""The node lease: held past its TTL while the block runs, never taken again after it ends, and
renewed in a forked process too (a prefork pool child)."""

from __future__ import annotations

import os
import threading
import time

from flowcraft_celery.distributed.node.lease import lease
from flowcraft_celery.stores.memory import MemoryCoordinationStore

TTL = 0.15


def test_a_lease_outlives_its_ttl_while_the_block_runs_and_is_free_once_it_ends() -> None:
    store = MemoryCoordinationStore()
    renewed: list[float] = []
    with lease(store, "a", ttl=TTL, on_renew=lambda: renewed.append(time.monotonic())) as held:
        assert held
        time.sleep(4 * TTL)
        assert store.holder("a") == held.owner, "the lock lapsed while its block still ran"
        with lease(store, "a", ttl=TTL) as other:
            assert not other, "a second holder got a lock that is held"
    assert store.holder("a") is None
    assert len(renewed) >= 3
    after = len(renewed)
    time.sleep(2 * TTL)
    assert len(renewed) == after and store.holder("a") is None, "a lease was renewed after its block ended"


def test_leases_held_at_once_in_several_threads_are_each_renewed() -> None:
    store = MemoryCoordinationStore()
    lapsed: list[str] = []

    def hold(name: str, seconds: float) -> None:
        with lease(store, name, ttl=TTL) as held:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if store.holder(name) != held.owner:
                    lapsed.append(name)
                time.sleep(TTL / 4)

    threads = [threading.Thread(target=hold, args=(f"n{i}", 0.5 + i * TTL)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert lapsed == []
    assert all(store.holder(f"n{i}") is None for i in range(4))


def test_a_forked_process_renews_its_own_leases() -> None:
    store = MemoryCoordinationStore()
    with lease(store, "parent", ttl=TTL):
        pass
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            with lease(store, "child", ttl=TTL) as held:
                time.sleep(4 * TTL)
                ok = store.holder("child") == held.owner
            os.write(writer, b"1" if ok and store.holder("child") is None else b"0")
        finally:
            os._exit(0)
    os.close(writer)
    try:
        assert os.read(reader, 1) == b"1", "the lease lapsed in a forked process"
    finally:
        os.close(reader)
        os.waitpid(pid, 0)
