"""`start` is all or nothing: against a broken service it fails fast with one line naming the
endpoint, and the run never executes; a caller's run id makes it idempotent.

Broken services are closed ports, a port that never answers and wrong keys; the working
services are the shared dev services (only used, with this module's own names).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowcraft_celery.devtools.devservices import AZURITE_KEY, HOST
from flowcraft_celery.distributed.runs.errors import RunError
from tests.integration.faults.kit import ROOT, FaultKit, assert_recorded_once, fault_kit
from tests.integration.faults.private import free_ports
from tests.integration.polling import wait_for

CLI = str(ROOT / ".venv" / "bin" / "flowcraft-celery")
WRONG_KEY = "d3Jvbmcga2V5IGZvciB0ZXN0aW5nIG9ubHk="  # valid base64, not the account's key
#: start must give up within this (its broker deadline is 5 s here, Cosmos and Redis time out sooner)
START_LIMIT = 30.0


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory, services_env: dict[str, str]) -> Iterator[FaultKit]:
    folder: Path = tmp_path_factory.mktemp("start")
    with fault_kit(services_env, folder, "start", FLOWCRAFT_STALL_SECONDS="2",
                   FLOWCRAFT_RECONCILE_INTERVAL="1", FLOWCRAFT_START_TIMEOUT="5") as made:
        yield made


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung endpoint)."""
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def _storage(kit: FaultKit, queue_port: int, key: str = AZURITE_KEY) -> str:
    """The module's storage connection string with another queue port and account key."""
    text = re.sub(r"QueueEndpoint=http://127\.0\.0\.1:\d+/", f"QueueEndpoint=http://{HOST}:{queue_port}/",
                  kit.env["AZURE_STORAGE_CONNECTION_STRING"])
    return re.sub(r"AccountKey=[^;]*;", f"AccountKey={key};", text)


def _broken(kit: FaultKit, silent: int) -> dict[str, tuple[dict[str, str], str]]:
    """Each broken service: the environment that breaks it and the endpoint the error must name."""
    closed = free_ports(1)[0]
    cosmos = kit.env["AZURE_COSMOS_CONNECTION_STRING"]
    queue_port = kit.env["AZURE_STORAGE_CONNECTION_STRING"].split("QueueEndpoint=http://127.0.0.1:")[1].split("/")[0]
    return {
        "cosmos port": ({"AZURE_COSMOS_CONNECTION_STRING": f"AccountEndpoint=https://{HOST}:{closed}/;"
                         f"AccountKey={cosmos.split('AccountKey=')[1]}"}, f"https://{HOST}:{closed}/"),
        "storage key": ({"AZURE_STORAGE_CONNECTION_STRING": _storage(kit, int(queue_port), WRONG_KEY)},
                        f"{HOST}:{queue_port}/devstoreaccount1"),
        "malformed storage key": ({"AZURE_STORAGE_CONNECTION_STRING": _storage(kit, int(queue_port), "not%base64")},
                                  f"{HOST}:{queue_port}/devstoreaccount1"),
        "queue port": ({"AZURE_STORAGE_CONNECTION_STRING": _storage(kit, closed)}, f"{HOST}:{closed}/devstoreaccount1"),
        "hung queue": ({"AZURE_STORAGE_CONNECTION_STRING": _storage(kit, silent)}, f"{HOST}:{silent}/devstoreaccount1"),
        "broker url": ({"CELERY_BROKER_URL": f"azurequeue://{WRONG_KEY}@http://{HOST}:{closed}/devstoreaccount1"},
                       f"http://{HOST}:{closed}/devstoreaccount1"),
        "redis": ({"REDIS_URL": f"redis://{HOST}:{closed}/0"}, f"Redis at redis://{HOST}:{closed}/0"),
    }


def test_start_against_each_broken_service_fails_fast_naming_it_and_never_runs(kit: FaultKit,
                                                                               silent_port: int) -> None:
    started: list[str] = []
    for case, (override, endpoint) in _broken(kit, silent_port).items():
        run_id = f"broken-{uuid.uuid4().hex[:8]}"
        began = time.monotonic()
        cli = subprocess.run([CLI, "start", "ft-other", "--run-id", run_id], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT), **override}, capture_output=True,
                             text=True, timeout=120,
                             check=False)
        elapsed = time.monotonic() - began
        lines = [line for line in cli.stderr.splitlines() if line.strip()]
        assert cli.returncode in (3, 4) and cli.stdout == "", (case, cli.returncode, cli.stdout, cli.stderr)
        assert len(lines) == 1 and lines[0].startswith("Error: ") and endpoint in lines[0], (case, cli.stderr)
        assert elapsed < START_LIMIT, (case, elapsed)
        started.append(run_id)
    workers = kit.group()
    workers.worker(concurrency=1)
    workers.beat()
    workers.wait_ready(90)
    time.sleep(4)  # several reconcile passes past the 2 s stall threshold
    for run_id in started:
        assert kit.client.runtime.statuses.get(run_id) is None, run_id
        assert kit.calls(run_id) == {}, run_id


def test_starting_one_run_id_twice_starts_one_run(kit: FaultKit) -> None:
    if not kit.groups:
        workers = kit.group()
        workers.worker(concurrency=1)
        workers.wait_ready(90)
    run_id = f"mine-{uuid.uuid4().hex[:8]}"
    assert kit.client.start("ft-other", {}, run_id).run_id == run_id
    assert kit.client.start("ft-other", {}, run_id).run_id == run_id
    doc = kit.client.wait(run_id, 120)
    assert doc["status"] == "completed", doc.get("errors")
    wait_for(lambda: kit.calls(run_id) == {"x": 1}, 10, "the one run's node")
    with pytest.raises(RunError, match="already a run of blueprint 'ft-other'"):
        kit.client.start("ft-slow", {}, run_id)
    time.sleep(2)
    assert kit.calls(run_id) == {"x": 1}
    assert_recorded_once(kit, run_id, {"x"})
