"""Queue shards over two storage accounts: with FLOWCRAFT_QUEUE_SHARDS=2 and FLOWCRAFT_STORAGE_ACCOUNTS
naming a second account, shard 0 of the default queue lives in the main account and shard 1 in the
second; a real worker runs fan-out workflows from both to completion, each node once, dead-letters
a poison message on shard 1 beside it, and `flowcraft-celery queues` and `dlq` see both accounts.
An extra account that does not answer is told at worker start in one line naming its entry.

Azure Storage is a private Azurite started by this module on its own ports with two accounts
(`AZURITE_ACCOUNTS`), stopped by PID; Cosmos DB and Redis are the shared dev services (this
module's own names). Stops only its own processes.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueServiceClient

from flowcraft_celery.devtools import background, devservices
from flowcraft_celery.distributed.core.shards import shard_names
from tests.integration.faults import fault_nodes
from tests.integration.faults.kit import ROOT, FaultKit, assert_completed_once, fault_kit
from tests.integration.faults.private import START_TIMEOUT, free_ports
from tests.integration.polling import wait_for
from transports.azurequeue import azure_queue_name

RUN_TIMEOUT = 180.0
SHARDS = 2
MAIN, SECOND = devservices.AZURITE_ACCOUNT, "flowcraftsecond"
SECOND_KEY = base64.b64encode(b"flowcraft second test account!!!").decode()
AZURITE_KEY = "azurite-two-accounts"


def _connection_string(account: str, key: str, blob: int, queue: int) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
            f"BlobEndpoint=http://{devservices.HOST}:{blob}/{account};QueueEndpoint=http://{devservices.HOST}:{queue}/{account};")


@pytest.fixture(scope="module")
def accounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A private Azurite holding two accounts; their connection strings (main, second)."""
    folder: Path = tmp_path_factory.mktemp("azurite-accounts")
    blob, queue, table = free_ports(3)
    known = f"{MAIN}:{devservices.AZURITE_KEY};{SECOND}:{SECOND_KEY}"
    argv = ("env", f"AZURITE_ACCOUNTS={known}", str(ROOT / "node_modules" / ".bin" / "azurite"),
            *devservices.AZURITE_FLAGS, "--blobHost", devservices.HOST, "--blobPort", str(blob),
            "--queueHost", devservices.HOST, "--queuePort", str(queue), "--tableHost", devservices.HOST,
            "--tablePort", str(table))
    pid = background.start(folder, AZURITE_KEY, argv)
    strings = (_connection_string(MAIN, devservices.AZURITE_KEY, blob, queue),
               _connection_string(SECOND, SECOND_KEY, blob, queue))
    try:
        deadline = time.monotonic() + START_TIMEOUT
        for conn_str in strings:
            while True:
                try:
                    list(QueueServiceClient.from_connection_string(conn_str).list_queues(results_per_page=1))
                    break
                except AzureError:
                    if not background.alive(pid) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        yield strings
    finally:
        background.stop(folder, AZURITE_KEY, "azurite", grace=5.0)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory, services_env: dict[str, str],
        accounts: tuple[str, str]) -> Iterator[FaultKit]:
    main, second = accounts
    env = {**services_env, "AZURE_STORAGE_CONNECTION_STRING": main}
    with fault_kit(env, tmp_path_factory.mktemp("shards-accounts"), "shacc", FLOWCRAFT_QUEUE_SHARDS=str(SHARDS),
                   FLOWCRAFT_STORAGE_ACCOUNTS=second) as made:
        yield made


def _client(conn_str: str, queue: str) -> QueueClient:
    """The client of a Celery queue's Azure queue in one account."""
    name = azure_queue_name(queue, os.environ.get("FLOWCRAFT_QUEUE_PREFIX", ""))
    return QueueServiceClient.from_connection_string(conn_str).get_queue_client(name)


def _length(conn_str: str, queue: str) -> int | None:
    """Messages on a Celery queue's Azure queue in one account; None when it does not exist there."""
    try:
        props = _client(conn_str, queue).get_queue_properties()
    except ResourceNotFoundError:
        return None
    return int(props.approximate_message_count or 0)


def _cli(kit: FaultKit, *args: str) -> subprocess.CompletedProcess[str]:
    """`flowcraft-celery ARGS` from this checkout with the module's settings."""
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(ROOT)) if p)
    return subprocess.run([sys.executable, "-m", "flowcraft_celery.cli", *args], cwd=ROOT,
                          env={**os.environ, **kit.env, "PYTHONPATH": path},
                          capture_output=True, text=True, timeout=90, check=False)


def test_a_worker_runs_the_shards_of_both_accounts_and_queues_and_dlq_see_them(
        kit: FaultKit, accounts: tuple[str, str]) -> None:
    main, second = accounts
    shard0, shard1 = shard_names(kit.env["FLOWCRAFT_DEFAULT_QUEUE"], SHARDS)
    runs: list[str] = []
    while len(runs) < 6 or not (_length(main, shard0) and _length(second, shard1)):  # no worker yet: they wait
        assert len(runs) < 30, "30 runs never reached both shards"
        runs += kit.start("ft-fan")
    assert _length(main, shard0) + _length(second, shard1) == len(runs)  # type: ignore[operator]
    assert _length(second, shard0) is None and _length(main, shard1) is None  # each shard in its own account only

    group = kit.group()
    group.worker(concurrency=2)
    group.wait_ready(90)
    docs = kit.wait_final(runs, RUN_TIMEOUT)
    assert_completed_once(kit, docs, fault_nodes.wide_nodes())
    wait_for(lambda: _length(main, shard0) == 0 and _length(second, shard1) == 0, 30, "both shards to drain")

    # a poison message on shard 1 is dead-lettered beside it, in the second account
    _client(second, shard1).send_message("{not an envelope")
    wait_for(lambda: _length(second, f"{shard1}-dlq") == 1, 60, "the poison message in shard 1's dead-letter queue")
    assert _length(main, f"{shard1}-dlq") is None
    kit.stop_all()

    listed = _cli(kit, "queues", "--json")
    assert listed.returncode == 0, listed.stderr
    queues = {q["queue"]: q["messages"] for q in json.loads(listed.stdout)["queues"]}
    assert {shard0: 0, shard1: 0, f"{shard1}-dlq": 1}.items() <= queues.items(), queues
    shown = _cli(kit, "dlq", "show", shard1, "--json")
    assert shown.returncode == 0, shown.stderr
    assert ["undecodable" in letter["reason"] for letter in json.loads(shown.stdout)["shown"]] == [True]
    purged = _cli(kit, "dlq", "purge", shard1, "--yes", "--json")
    assert purged.returncode == 0 and json.loads(purged.stdout)["deleted"] == 1, purged.stderr
    assert _length(second, f"{shard1}-dlq") == 0


def test_an_extra_account_that_does_not_answer_is_named_at_worker_start(kit: FaultKit) -> None:
    port = free_ports(1)[0]
    closed = _connection_string(SECOND, SECOND_KEY, port, port)
    group = kit.group(FLOWCRAFT_STORAGE_ACCOUNTS=closed)
    group.worker(concurrency=1)
    log = group.logs[-1]
    expected = (f"flowcraft: cannot reach Azure Storage at http://{devservices.HOST}:{port}/{SECOND} "
                "(FLOWCRAFT_STORAGE_ACCOUNTS entry 1): connection refused")
    wait_for(lambda: expected in log.read_text(errors="replace"), 60, f"{expected!r} in the worker's log")
    text = log.read_text(errors="replace")
    assert SECOND_KEY not in text and "Traceback" not in text, text[-3000:]
    group.stop()
