"""Connecting to `azurequeue://` fails when the broker is not there, and per-message expiration
holds on Redis-backed transient queues (kombu's own suite checks both: `suites/run.py kombu`)."""

from __future__ import annotations

import os
import sys
import time
from contextlib import closing, suppress
from pathlib import Path

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

from tests.integration.polling import wait_for
from tests.integration.transports.transport_support import APP, connection, processes
from transports.azurequeue.stats import STATS

KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
#: A loopback port where nothing listens.
UNREACHABLE = f"azurequeue://{KEY}@http://127.0.0.1:9/devstoreaccount1"


def test_unreachable_account_fails_to_connect_at_once_with_a_clear_error(unique_prefix: str) -> None:
    conn = Connection(UNREACHABLE, transport_options={"queue_name_prefix": unique_prefix})
    started = time.monotonic()
    with pytest.raises(conn.connection_errors) as info:
        conn.connection  # noqa: B018  (establishing is what fails)
    assert time.monotonic() - started < 3
    message = str(info.value)
    assert "azurequeue://**@http://127.0.0.1:9/devstoreaccount1" in message and "does not answer" in message
    assert KEY not in message
    with pytest.raises(conn.connection_errors):
        conn.channel()
    conn.release()


def test_a_refused_key_fails_to_connect(unique_prefix: str) -> None:
    wrong = "A" * 86 + "=="
    conn = Connection(f"azurequeue://{wrong}@http://127.0.0.1:10001/devstoreaccount1",
                      transport_options={"queue_name_prefix": unique_prefix})
    with pytest.raises(conn.connection_errors, match="refuses the credential"):
        conn.connect()
    conn.release()


def test_unreachable_redis_fails_to_connect(unique_prefix: str) -> None:
    conn = connection(unique_prefix, redis_url="redis://127.0.0.1:9/0")
    with pytest.raises(conn.connection_errors, match="redis_url"):
        conn.connection  # noqa: B018
    conn.release()


def test_a_healthy_account_connects_with_one_request(unique_prefix: str) -> None:
    before = STATS.snapshot()
    with connection(unique_prefix) as conn:
        started = time.monotonic()
        conn.connect()
        assert time.monotonic() - started < 2
        assert conn.connected
    after = STATS.snapshot()
    assert {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)} == {"queue.list": 1}


def test_worker_against_an_unreachable_account_says_it_cannot_connect(tmp_path: Path, unique_prefix: str) -> None:
    """Celery's own message and retries, instead of `Connected to` and silence."""
    with processes(tmp_path, unique_prefix) as started:
        worker = started.start("worker", [
            sys.executable, "-m", "celery", "-A", APP, "-b", UNREACHABLE, "worker", "-l", "INFO", "-c", "1",
        ])
        wait_for(lambda: "Cannot connect to" in worker.text(), 30)
        text = worker.text()
        assert "azurequeue://**@http://127.0.0.1:9/devstoreaccount1" in text and "does not answer" in text
        assert "Connected to" not in text and KEY not in text


def test_expiration_holds_on_transient_queues_in_redis(unique_prefix: str, rdb: object) -> None:
    with connection(unique_prefix, redis_url=os.environ["REDIS_URL"]) as conn:
        with closing(conn.SimpleBuffer("buffer")) as buf:
            buf.put({"n": 1}, expiration=1)
            buf.put({"n": 2})
            time.sleep(1.5)
            assert buf.get(timeout=2).payload == {"n": 2}
            with pytest.raises(buf.Empty):
                buf.get(timeout=0.5)
        # the consumer's delivery path (the transient queues' thread), and the queue's x-message-ttl
        exchange = Exchange(f"ttl-{unique_prefix}", type="fanout")
        queue = Queue(f"ttl-{unique_prefix}", exchange, auto_delete=True, message_ttl=1)
        got: list[object] = []
        with conn.channel() as channel:
            queue(channel).declare()
            producer = Producer(channel, exchange)
            producer.publish({"n": "stale"})
            producer.publish({"n": "short"}, expiration=0.2)
            time.sleep(1.3)
            producer.publish({"n": "fresh"})
            with Consumer(channel, [queue], callbacks=[lambda body, message: got.append(body)], no_ack=True):
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline:
                    with suppress(TimeoutError):
                        conn.drain_events(timeout=0.5)
        assert got == [{"n": "fresh"}]
