"""One deployment for the operator tests: 2 workers, beat, Flower and the metrics endpoint, over a
private password-protected Redis and the shared Azurite and Cosmos emulator, with account keys
planted in the settings. The scenario of `op-flow` (fan-out, retry, sleep, wait) runs once per
module and records what the operator commands said along the way."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from azure.storage.queue import QueueServiceClient

from flowcraft_celery.devtools.workers import WorkerGroup
from tests.integration import names
from tests.integration.polling import wait_for

ROOT = Path(__file__).resolve().parents[3]
NODES = "tests.integration.operator.operator_nodes"
SETTINGS = "tests.integration.operator.operator_settings"
#: Flower's task list with the columns that name a node task's run and nodes (kwargs, result).
FLOWER_COLUMNS = "name,uuid,state,kwargs,result,received,runtime,worker"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PasswordRedis:
    """A private `redis-server` that requires a password, on a free port, stopped by PID."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.password = f"op-redis-{secrets.token_hex(8)}"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", self.password,
                 "--save", "", "--appendonly", "no"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        client = redis.Redis.from_url(self.url)
        try:
            wait_for(lambda: self._pings(client), 15, "the private redis-server", 0.05)
        finally:
            client.close()

    @staticmethod
    def _pings(client: redis.Redis) -> bool:
        with contextlib.suppress(redis.ConnectionError):
            return bool(client.ping())
        return False

    @property
    def url(self) -> str:
        """Its URL, password included."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """TERM, then KILL."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class Deployment:
    """The running deployment and the ways an operator talks to it."""

    tag: str
    env: dict[str, str]
    group: WorkerGroup
    redis: PasswordRedis
    flower_port: int
    metrics_port: int
    worker_names: list[str]
    planted: dict[str, str]
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def queue(self) -> str:
        """The default task queue (Kombu name)."""
        return self.env["FLOWCRAFT_DEFAULT_QUEUE"]

    def run(self, argv: list[str], timeout: float = 120, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `python ARGV...` in the deployment's environment."""
        done = subprocess.run([sys.executable, *argv], env={**os.environ, **self.env, **(env or {})}, cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def cli(self, *args: str, timeout: float = 120, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """`flowcraft-celery ARGS...`"""
        return self.run(["-m", "flowcraft_celery.cli", *args], timeout, env, check)

    def celery(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`celery -A flowcraft_celery ARGS...`"""
        return self.run(["-m", "celery", "-A", "flowcraft_celery", *args], timeout, None, check)

    def cli_json(self, *args: str) -> Any:
        """A command's `--json` output."""
        return json.loads(self.cli(*args, "--json").stdout)

    def http(self, port: int, path: str, timeout: float = 60) -> str:
        """GET http://127.0.0.1:PORT/PATH as text."""
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return str(response.read().decode("utf-8"))

    def flower(self, path: str, timeout: float = 60) -> Any:
        """Flower's JSON API."""
        return json.loads(self.http(self.flower_port, path, timeout))

    def flower_post(self, path: str, timeout: float = 60) -> tuple[int, Any]:
        """POST to Flower's API (what its buttons do): the HTTP status and the JSON answer."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.flower_port}{path}", data=b"", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(response.status), json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode("utf-8", errors="replace")

    def logs(self) -> dict[str, str]:
        """Every log of the deployment's processes, by file name."""
        return {log.name: log.read_text(errors="replace") for log in self.group.logs}


def _http_up(port: int, path: str) -> bool:
    with contextlib.suppress(OSError, urllib.error.URLError), \
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return bool(response.status == 200)
    return False


def _cleanup_queues(prefix: str) -> None:
    service = QueueServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
    for queue in service.list_queues(name_starts_with=prefix):
        with contextlib.suppress(Exception):
            service.delete_queue(queue.name)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, services_env: dict[str, str]) -> Iterator[Deployment]:
    """Workers, beat, Flower and the metrics endpoint of a deployment of our own."""
    tag = names.unique_name("op")
    log_dir = tmp_path_factory.mktemp("operator")
    private = PasswordRedis(log_dir / "redis-server.log")
    flower_port, metrics_port = free_port(), free_port()
    env = {**services_env, "REDIS_URL": private.url, "FLOWCRAFT_CONFIG_MODULE": SETTINGS,
           "FLOWCRAFT_QUEUE_PREFIX": f"{tag}-", "FLOWCRAFT_DEFAULT_QUEUE": "tasks", "FLOWCRAFT_KEY_PREFIX": f"{tag}:",
           "FLOWCRAFT_COSMOS_DATABASE": tag, "FLOWCRAFT_NODE_MODULES": NODES,
           "FLOWCRAFT_BLUEPRINTS": f"{NODES}:blueprints", "FLOWCRAFT_TASK_EVENTS": "true",
           "FLOWCRAFT_INLINE_DEPTH": "0", "FLOWCRAFT_FANOUT_GROUP": "1", "FLOWCRAFT_RECONCILE_INTERVAL": "3",
           "FLOWCRAFT_STALL_SECONDS": "8", "FLOWER_UNAUTHENTICATED_API": "true", "PYTHONUNBUFFERED": "1"}
    group = WorkerGroup(env, log_dir, cwd=ROOT)
    planted = {"redis password": private.password,
               "storage account key": _account_key(services_env["AZURE_STORAGE_CONNECTION_STRING"]),
               "cosmos account key": _account_key(services_env["AZURE_COSMOS_CONNECTION_STRING"])}
    state = Deployment(tag, env, group, private, flower_port, metrics_port, [], planted)
    try:
        # as on an operator's machine: Flower has neither the node modules nor the blueprints
        group.flower(flower_port, f"--tasks_columns={FLOWER_COLUMNS}",
                     without=("FLOWCRAFT_NODE_MODULES", "FLOWCRAFT_BLUEPRINTS"))
        wait_for(lambda: _http_up(flower_port, "/healthcheck"), 60, "Flower")
        for name in ("w1", "w2"):
            group.worker(queues="tasks,tasks-reconcile", concurrency=2, name=f"{name}-{tag}")
            state.worker_names.append(f"{name}-{tag}@{socket.gethostname()}")
        group.beat()
        group.program("metrics", "-m", "flowcraft_celery.cli", "metrics", "--port", str(metrics_port),
                      "--queue-interval", "0", "--runs-interval", "0")
        group.wait_ready(90)
        wait_for(lambda: _http_up(metrics_port, "/metrics"), 60, "the metrics endpoint")
        yield state
    finally:
        group.stop()
        private.stop()
        _cleanup_queues(f"{tag}-")
        with contextlib.suppress(Exception):
            from flowcraft_celery.stores.cosmos_client import get_client

            get_client(None, False).delete_database(tag)


def _account_key(connection_string: str) -> str:
    parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    return parts["AccountKey"]
