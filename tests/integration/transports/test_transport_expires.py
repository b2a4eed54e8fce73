"""A Celery task whose `expires` passes while it waits on an Azure queue is revoked by the worker
that receives it (so its result says REVOKED), not dropped unseen by Azure (result PENDING)."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from tests.integration.transports.transport_support import client_app, processes, wait_for


def test_a_task_expired_on_the_queue_reaches_a_worker_which_revokes_it(
    tmp_path: Path, rdb: redis.Redis, unique_prefix: str
) -> None:
    app = client_app(unique_prefix, redis=False)
    key = f"{unique_prefix}:runs"
    expired = app.send_task("transport_app.record", args=[key, "expired"], expires=1)
    fresh = app.send_task("transport_app.record", args=[key, "fresh"], expires=600)
    time.sleep(3)  # past the expiry: with Azure's own message TTL the message would be gone now
    with processes(tmp_path, unique_prefix, redis=False) as started:
        worker = started.worker("w1")
        wait_for(lambda: f"Discarding revoked task: transport_app.record[{expired.id}]" in worker.text(), 60)
        wait_for(lambda: rdb.lrange(key, 0, -1) == ["fresh"], 30)
        assert f"transport_app.record[{fresh.id}] succeeded" in worker.text()
