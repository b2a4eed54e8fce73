"""Helpers for the transport tests: client apps, Kombu connections and real worker processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.storage.queue import QueueClient, QueueServiceClient
from celery import Celery
from kombu import Connection

import transports  # noqa: F401  (registers azurequeue://)
from tests.integration.polling import wait_for
from transports.azurequeue.naming import azure_queue_name

ROOT = Path(__file__).resolve().parents[3]
APP = "tests.integration.transports.transport_app"


def connection(prefix: str, **options: Any) -> Connection:
    """A Kombu connection on `azurequeue://` whose queues all start with `prefix`."""
    return Connection("azurequeue://", transport_options={"queue_name_prefix": prefix, **options})


def azure_queue(prefix: str, name: str) -> QueueClient:
    """The plain Azure SDK client of Kombu queue `name` under `prefix` (to peek and count behind
    the transport's back)."""
    service = QueueServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
    return service.get_queue_client(azure_queue_name(name, prefix))


def client_app(prefix: str, visibility: int = 30, redis: bool = True) -> Celery:
    """A Celery client app that sends to the test app's tasks under `prefix` (with Redis unless
    `redis` is false, like the workers started with the same flag)."""
    app = Celery("transport_test_client", broker="azurequeue://")
    app.conf.update(
        broker_transport_options={
            "queue_name_prefix": prefix,
            "visibility_timeout": visibility,
            "redis_url": os.environ["REDIS_URL"] if redis else None,
        },
        task_send_sent_event=True,
    )
    return app


def child_env(prefix: str, visibility: int = 30, redis: bool = True) -> dict[str, str]:
    """Environment for a child process of the test app under `prefix` (with Redis unless not)."""
    env = dict(os.environ)
    env.update(
        TRANSPORT_TEST_PREFIX=prefix,
        TRANSPORT_TEST_VISIBILITY=str(visibility),
        TRANSPORT_TEST_REDIS="1" if redis else "0",
        PYTHONPATH=str(ROOT),
    )
    return env


@dataclass
class Process:
    """A child process started by a test, with its log file."""

    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        """Return everything the process has logged so far."""
        return self.log.read_text(errors="replace")

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` to the process and its children (its own session), by its PID."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self, grace: float = 20.0) -> None:
        """Stop it: SIGTERM, then SIGKILL after `grace` seconds; reap it."""
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


@dataclass
class Processes:
    """Starts processes for one test and stops them all in teardown."""

    directory: Path
    prefix: str
    redis: bool = True
    started: list[Process] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], visibility: int = 30) -> Process:
        """Start `argv` in its own session with the test app's environment."""
        log = self.directory / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, cwd=ROOT, env={**child_env(self.prefix, visibility, self.redis), **self.env}, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        process = Process(proc, log)
        self.started.append(process)
        return process

    def worker(self, name: str, visibility: int = 30, *extra: str) -> Process:
        """Start a `celery worker` of the test app and wait until it is ready."""
        argv = [
            sys.executable, "-m", "celery", "-A", APP, "worker", "-l", "INFO",
            "-n", f"{name}@%h", "-c", "2", *extra,
        ]
        process = self.start(name, argv, visibility)
        wait_for(lambda: "ready." in process.text() or process.proc.poll() is not None, 60)
        assert process.proc.poll() is None, process.text()
        return process

    def stop_all(self) -> None:
        """Stop every process this test started."""
        for process in self.started:
            process.stop()


@contextmanager
def processes(directory: Path, prefix: str, redis: bool = True) -> Iterator[Processes]:
    """Yield a `Processes` whose children are stopped on exit, even on failure."""
    started = Processes(directory, prefix, redis)
    try:
        yield started
    finally:
        started.stop_all()
