"""Celery over the azurequeue transport: real workers, real Azurite, real Redis."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis
from azure.storage.queue import QueueServiceClient

from tests.integration.transports.transport_support import (
    APP,
    ROOT,
    Processes,
    child_env,
    client_app,
    connection,
    processes,
    wait_for,
)
from transports.azurequeue.naming import azure_queue_name


@pytest.fixture
def procs(tmp_path: Path, unique_prefix: str) -> Iterator[Processes]:
    """Processes for this test, stopped at teardown."""
    with processes(tmp_path, unique_prefix) as started:
        yield started


def entries(rdb: redis.Redis, key: str) -> list[str]:
    """The list a test task appended to."""
    return [str(entry) for entry in rdb.lrange(key, 0, -1)]


def test_task_runs_once_and_its_message_is_deleted(
    procs: Processes, rdb: redis.Redis, unique_prefix: str
) -> None:
    procs.worker("w1")
    app = client_app(unique_prefix)
    key = f"{unique_prefix}:runs"
    for i in range(20):
        app.send_task("transport_app.record", args=[key, str(i)])
    wait_for(lambda: len(entries(rdb, key)) >= 20, 60)
    time.sleep(2)
    assert sorted(entries(rdb, key), key=int) == [str(i) for i in range(20)]
    with connection(unique_prefix) as conn:
        wait_for(lambda: conn.SimpleQueue("celery").qsize() == 0, 10)


def test_killed_worker_task_runs_to_completion_once_more(
    procs: Processes, rdb: redis.Redis, unique_prefix: str
) -> None:
    first = procs.worker("first", 5, "-c", "1")
    app = client_app(unique_prefix, visibility=5)
    key = f"{unique_prefix}:slow"
    app.send_task("transport_app.slow", args=[key, 4])
    wait_for(lambda: any(e.startswith("start") for e in entries(rdb, key)), 30)
    first.kill()
    first.proc.wait(10)
    procs.worker("second", 5, "-c", "1")
    wait_for(lambda: any(e.startswith("done") for e in entries(rdb, key)), 60)
    time.sleep(8)
    runs = entries(rdb, key)
    assert [e.split(":")[0] for e in runs] == ["start", "start", "done"]
    assert runs[0] != runs[1]


def test_task_running_three_visibility_timeouts_runs_once(
    procs: Processes, rdb: redis.Redis, unique_prefix: str
) -> None:
    procs.worker("a", 3, "-c", "1")
    procs.worker("b", 3, "-c", "1")
    app = client_app(unique_prefix, visibility=3)
    key = f"{unique_prefix}:long"
    app.send_task("transport_app.slow", args=[key, 9])
    wait_for(lambda: any(e.startswith("done") for e in entries(rdb, key)), 60)
    time.sleep(7)
    assert [e.split(":")[0] for e in entries(rdb, key)] == ["start", "done"]


def test_bad_body_reaches_dlq_and_worker_keeps_consuming(
    procs: Processes, rdb: redis.Redis, unique_prefix: str
) -> None:
    worker = procs.worker("w1")
    service = QueueServiceClient.from_connection_string(
        os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    )
    service.get_queue_client(azure_queue_name("celery", unique_prefix)).send_message("{broken")
    app = client_app(unique_prefix)
    key = f"{unique_prefix}:after"
    app.send_task("transport_app.record", args=[key, "after"])
    wait_for(lambda: entries(rdb, key) == ["after"], 60)
    with connection(unique_prefix) as conn:
        dead = conn.SimpleQueue("celery-dlq").get(timeout=20)
        assert dead.headers["x-dead-letter-reason"].startswith("undecodable body")
        assert dead.body == b"{broken"
        dead.ack()
    assert "dead-letter queue: undecodable body" in worker.text()
    assert worker.proc.poll() is None


def test_without_redis_inspect_ping_from_another_process_reaches_two_workers(
    tmp_path: Path, unique_prefix: str
) -> None:
    with processes(tmp_path, unique_prefix, redis=False) as procs:
        procs.worker("alpha")
        procs.worker("beta")
        result = subprocess.run(
            [sys.executable, "-m", "celery", "-A", APP, "inspect", "ping", "--timeout", "12"],
            cwd=ROOT, env=child_env(unique_prefix, redis=False), capture_output=True, text=True,
            timeout=60,
        )
    assert "alpha@" in result.stdout and "beta@" in result.stdout, result.stdout + result.stderr
    assert "2 nodes online" in result.stdout


def test_event_receiver_in_another_process_sees_task_events(
    procs: Processes, tmp_path: Path, unique_prefix: str, rdb: redis.Redis
) -> None:
    procs.worker("w1", 30, "-E")
    events = tmp_path / "events.txt"
    events.touch()
    procs.start("events", [sys.executable, "-m", "tests.integration.transports.transport_event_dump",
                           str(events)])
    wait_for(lambda: "worker-heartbeat" in events.read_text(), 60)
    app = client_app(unique_prefix)
    key = f"{unique_prefix}:evented"
    result = app.send_task("transport_app.record", args=[key, "x"])
    wanted = {"task-sent", "task-received", "task-started", "task-succeeded"}

    def seen() -> set[str]:
        lines = [line.split() for line in events.read_text().splitlines()]
        return {parts[0] for parts in lines if len(parts) > 1 and parts[1] == result.id}

    wait_for(lambda: wanted <= seen(), 60)


def test_argument_of_200_kib_round_trips(
    procs: Processes, rdb: redis.Redis, unique_prefix: str
) -> None:
    procs.worker("w1")
    app = client_app(unique_prefix)
    key = f"{unique_prefix}:size"
    app.send_task("transport_app.record_size", args=[key, "z" * 200 * 1024])
    wait_for(lambda: entries(rdb, key) == [str(200 * 1024)], 60)


def _received_at(log: str, task_id: str) -> float:
    """When the worker logged receiving `task_id` (epoch seconds)."""
    match = re.search(rf"\[([\d\- :,]+): INFO/MainProcess\] Task \S+\[{task_id}\] received", log)
    assert match, log
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_countdown_is_not_delivered_early_and_retries_wait_too(
    procs: Processes, rdb: redis.Redis, unique_prefix: str
) -> None:
    worker = procs.worker("w1")
    app = client_app(unique_prefix)
    key = f"{unique_prefix}:later"
    sent = time.time()
    result = app.send_task("transport_app.record", args=[key, "late"], countdown=10)
    retry_key = f"{unique_prefix}:retry"
    app.send_task("transport_app.flaky", args=[retry_key, 3])
    wait_for(lambda: entries(rdb, key) == ["late"], 40)
    assert _received_at(worker.text(), result.id) >= sent + 9.9
    attempts = wait_for(lambda: (e := entries(rdb, retry_key)) and len(e) == 2 and e, 40)
    assert float(attempts[1]) - float(attempts[0]) >= 3.0


def test_celery_report_shows_no_credentials(unique_prefix: str) -> None:
    env = child_env(unique_prefix)
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, "report"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "azurequeue" in result.stdout
    secret = re.search(r"AccountKey=([^;]+)", env["AZURE_STORAGE_CONNECTION_STRING"])
    assert secret and secret.group(1) not in result.stdout + result.stderr
