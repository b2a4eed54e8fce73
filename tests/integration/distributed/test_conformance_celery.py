"""Conformance scenarios on real Celery worker processes (2 workers, Azurite, Cosmos, Redis).

The reference scenarios (our copy of the conformance file), and ours for the built-ins
that file does not cover on workers (subflows, sleep, dynamic nodes), and issue 10's (loops,
batches, context writes, recursion, cycles, resume, strict values, ids), and issue 19's recorded
decisions. With healthy services no worker may rebuild a run's Redis state (a rebuild means the
completion check found work Redis did not know of).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from azure.cosmos.exceptions import CosmosResourceNotFoundError
from azure.storage.queue import QueueServiceClient

from tests.integration.stores import cosmos_support

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = ROOT / "tests" / "scenarios" / "reference.json"
BUILTINS = ROOT / "tests" / "scenarios" / "builtins.json"
SEMANTICS = ROOT / "tests" / "scenarios" / "semantics.json"
DECISIONS = ROOT / "tests" / "scenarios" / "decisions.json"


@pytest.mark.parametrize("scenarios", [REFERENCE, BUILTINS, SEMANTICS, DECISIONS],
                         ids=["reference", "builtins", "semantics", "decisions"])
def test_scenarios_pass_on_celery_workers(scenarios: Path, services_env: dict[str, str]) -> None:
    """Every scenario passes, and the command's own workers leave nothing behind."""
    result = subprocess.run(
        [sys.executable, "-m", "flowcraft_celery.cli", "conformance", str(scenarios), "--mode", "celery",
         "--workers", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr[-3000:]
    assert lines[-1].endswith(" 0 failed"), result.stdout + result.stderr[-3000:]
    assert result.returncode == 0
    assert sum(line.startswith("PASS ") for line in lines) == len(lines) - 1
    assert "PASS workers rebuilt a run's Redis state 0 times" in lines[-2], lines[-2]
    named = re.search(r"named (conf-[0-9a-f]+) ", result.stderr)
    assert named, result.stderr[-3000:]
    assert_nothing_left(named.group(1))


def assert_nothing_left(name: str) -> None:
    """No queue, Cosmos DB database or Redis key of the run's own deployment `name` remains."""
    queues = QueueServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
    assert [q.name for q in queues.list_queues(name_starts_with=name)] == []
    with pytest.raises(CosmosResourceNotFoundError):
        cosmos_support.client().get_database_client(name).read()
    keys = redis.Redis.from_url(os.environ["REDIS_URL"])
    assert [*keys.scan_iter(match=f"{name}:*", count=1000), *keys.scan_iter(match=f"flowcraft:{name}:*")] == []
