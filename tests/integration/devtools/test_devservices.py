"""The dev services answer real requests; `up`/`down` start and stop only their own processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from azure.cosmos import CosmosClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from flowcraft_celery.devtools import background, devservices
from flowcraft_celery.devtools.devservices import Ports, ServiceError, State

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

ENV_NAMES = [
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_COSMOS_CONNECTION_STRING",
    "FLOWCRAFT_COSMOS_VERIFY_TLS",
    "REDIS_URL",
]


def _cosmos_parts(conn: str) -> tuple[str, str]:
    """Endpoint and key of a Cosmos connection string."""
    fields = dict(part.split("=", 1) for part in conn.split(";") if part)
    return fields["AccountEndpoint"], fields["AccountKey"]


@pytest.fixture
def free_ports() -> Ports:
    """Five loopback ports nothing listens on (so `up` has to start every service)."""
    sockets = [socket.socket() for _ in range(5)]
    try:
        for sock in sockets:
            sock.bind((devservices.HOST, 0))
        numbers = [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    return Ports(*numbers)


@pytest.fixture
def stop_after(free_ports: Ports) -> Iterator[Ports]:
    """The free ports, with whatever `up` started on them stopped (and its logs removed) after."""
    try:
        yield free_ports
    finally:
        devservices.down(free_ports, only_started_here=True)
        root = devservices.repo_root()
        for launch in devservices.launches(free_ports, root):
            background.log_path(devservices.services_dir(root), launch.key).unlink(missing_ok=True)
        shutil.rmtree(devservices.services_dir(root) / f"redis-{free_ports.redis}-aof", ignore_errors=True)


def test_up_returns_the_env_vars_the_session_exported(services_env: dict[str, str]) -> None:
    assert sorted(services_env) == sorted(ENV_NAMES)
    assert services_env == devservices.up()
    assert all(os.environ[name] == value for name, value in services_env.items())
    assert services_env["FLOWCRAFT_COSMOS_VERIFY_TLS"] == "false"


def test_azurite_queue_and_blob_accept_real_requests(unique_name: Callable[[str], str]) -> None:
    conn = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    queues = QueueServiceClient.from_connection_string(conn)
    queue = unique_name("devsvc")
    queues.create_queue(queue)
    try:
        queues.get_queue_client(queue).send_message("hello")
        received = list(queues.get_queue_client(queue).receive_messages())
        assert [m.content for m in received] == ["hello"]
    finally:
        queues.delete_queue(queue)
    assert queue not in {q.name for q in queues.list_queues(name_starts_with=queue)}
    blobs = BlobServiceClient.from_connection_string(conn)
    container = unique_name("devsvc")
    blobs.create_container(container)
    blobs.delete_container(container)


def test_cosmos_creates_and_deletes_a_database(unique_prefix: str) -> None:
    endpoint, key = _cosmos_parts(os.environ["AZURE_COSMOS_CONNECTION_STRING"])
    client = CosmosClient(endpoint, credential=key, connection_verify=False)
    database = client.create_database(unique_prefix)
    try:
        assert database.read()["id"] == unique_prefix
    finally:
        client.delete_database(unique_prefix)
    assert unique_prefix not in {db["id"] for db in client.list_databases()}


def test_redis_answers_ping(unique_prefix: str) -> None:
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    assert client.ping() is True
    client.set(unique_prefix, "x", ex=60)
    assert client.get(unique_prefix) == b"x"
    client.delete(unique_prefix)


def test_a_second_up_reuses_everything() -> None:
    reports = devservices.bring_up(Ports.from_env())
    assert [r.state for r in reports] == [State.ANSWERS] * 5
    assert not any(r.note.startswith("started") for r in reports)


def test_up_starts_what_is_missing_and_down_stops_it(stop_after: Ports) -> None:
    ports = stop_after
    reports = devservices.bring_up(ports)
    assert [r.endpoint.port for r in reports] == [
        ports.blob,
        ports.queue,
        ports.table,
        ports.cosmos,
        ports.redis,
    ]
    assert all(r.note.startswith("started (pid ") for r in reports), reports
    assert all(r.state is State.ANSWERS for r in devservices.status(ports))
    folder = devservices.services_dir(devservices.repo_root())
    pids = {int(p.read_text()) for p in folder.glob("*.pid") if _is_for(p, ports)}
    assert len(pids) == 3
    queues = QueueServiceClient.from_connection_string(devservices.env_vars(ports)["AZURE_STORAGE_CONNECTION_STRING"])
    queues.create_queue("started-here")
    redis.Redis.from_url(devservices.env_vars(ports)["REDIS_URL"]).set("kept", "across restarts")

    stopped = devservices.down(ports)

    assert len(stopped) == 3
    assert not any(background.alive(pid) for pid in pids)
    assert all(r.state is State.FREE for r in devservices.status(ports))
    assert not any(_is_for(p, ports) for p in folder.glob("*.pid"))
    devservices.bring_up(ports)
    assert redis.Redis.from_url(devservices.env_vars(ports)["REDIS_URL"]).get("kept") == b"across restarts"


def _is_for(pidfile: Path, ports: Ports) -> bool:
    """True when a PID file belongs to a launch on one of `ports`."""
    numbers = {str(p) for p in (ports.blob, ports.queue, ports.table, ports.cosmos, ports.redis)}
    return pidfile.stem.rsplit("-", 1)[-1] in numbers


def test_up_refuses_a_port_held_by_something_else(stop_after: Ports) -> None:
    ports = stop_after
    squatter = socket.socket()
    squatter.bind((devservices.HOST, ports.cosmos))
    squatter.listen()
    try:
        with pytest.raises(ServiceError, match=rf"cosmos on https://127\.0\.0\.1:{ports.cosmos}"):
            devservices.bring_up(ports)
    finally:
        squatter.close()
    assert devservices.status(ports)[0].state is State.FREE


def test_up_waits_for_its_own_busy_emulator_and_names_it_when_it_never_answers(stop_after: Ports) -> None:
    ports = stop_after
    devservices.bring_up(ports)
    folder = devservices.services_dir(devservices.repo_root())
    cosmos = next(la for la in devservices.launches(ports, devservices.repo_root()) if la.key.startswith("cosmosdb"))
    pid = background.running_pid(folder, cosmos.key, cosmos.program)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # a stalled emulator: its port accepts connections, nothing answers
    try:
        with pytest.raises(ServiceError, match=rf"cosmos on https://127\.0\.0\.1:{ports.cosmos} \(started by "
                                               rf"flowcraft-celery, pid {pid}\) did not answer within 1 s"):
            devservices.bring_up(ports, timeout=1)
        threading.Timer(3.0, os.kill, (pid, signal.SIGCONT)).start()
        reports = devservices.bring_up(ports, timeout=60)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert [r.state for r in reports] == [State.ANSWERS] * 5
    assert background.running_pid(folder, cosmos.key, cosmos.program) == pid


def test_cli_env_output_evals_to_the_env_vars(services_env: dict[str, str]) -> None:
    cli = Path(sys.executable).with_name("flowcraft-celery")
    script = f'eval "$({cli} services up --env)"; ' + "; ".join(f'printf "%s\\n" "${name}"' for name in ENV_NAMES)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [services_env[name] for name in ENV_NAMES]
