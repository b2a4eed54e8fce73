"""Conformance scenarios on a sharded deployment: FLOWCRAFT_QUEUE_SHARDS=3, two real workers
started without -Q (so they consume every shard) and beat running reconcile. Every scenario passes,
the node messages really went through more than one shard queue, no worker rebuilt a run's Redis
state and reconcile re-sent nothing (healthy services).

Breaks no service (the shared dev services, with this module's own queue, key prefix and
database); stops only its own workers and beat.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from flowcraft_celery.cli.conformance import REBUILD_LINE
from flowcraft_celery.devtools.conformance import scenarios_env
from flowcraft_celery.devtools.workers import WorkerGroup
from flowcraft_celery.distributed.core.shards import shard_names
from tests.integration import names
from tests.integration.distributed.shard_tap import KEY_VARIABLE

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = ROOT / "tests" / "scenarios" / "reference.json"
SHARDS = 3


@pytest.fixture
def tag(services_env: dict[str, str]) -> Iterator[str]:
    """The deployment's name; its Redis keys go with the test (the scenario counters have no TTL)."""
    name = names.unique_name("confsh")
    yield name
    store = redis.Redis.from_url(services_env["REDIS_URL"])
    for pattern in (f"{name}:*", f"flowcraft:{name}:*"):
        for key in store.scan_iter(match=pattern, count=1000):
            store.unlink(key)


def test_scenarios_pass_on_a_sharded_deployment_and_use_several_shards(
        services_env: dict[str, str], tmp_path: Path, tag: str) -> None:
    env = {**services_env, **scenarios_env(str(REFERENCE), f"flowcraft:{tag}"),
           "FLOWCRAFT_NODE_MODULES": "flowcraft_celery.devtools.conformance_celery,"
                                     "tests.integration.distributed.shard_tap",
           "FLOWCRAFT_DEFAULT_QUEUE": tag, "FLOWCRAFT_KEY_PREFIX": f"{tag}:", "FLOWCRAFT_COSMOS_DATABASE": tag,
           "FLOWCRAFT_QUEUE_SHARDS": str(SHARDS), "FLOWCRAFT_RECONCILE_INTERVAL": "2",
           KEY_VARIABLE: f"{tag}:tap"}
    with WorkerGroup(env, tmp_path / "logs", cwd=ROOT) as group:
        for _ in range(2):
            group.worker()  # no -Q: the worker consumes every shard and the reconcile queue
        group.beat()
        group.wait_ready(90)
        result = subprocess.run(
            [sys.executable, "-m", "flowcraft_celery.cli", "conformance", str(REFERENCE), "--mode", "celery",
             "--external-workers"],
            cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=900, check=False)
        group.stop()
        logs = b"".join(log.read_bytes() for log in group.logs if log.exists())
    lines = result.stdout.strip().splitlines()
    assert lines and lines[-1].endswith(" 0 failed"), result.stdout + result.stderr[-3000:]
    assert result.returncode == 0
    assert sum(line.startswith("PASS ") for line in lines) == len(lines) - 1
    assert logs.count(REBUILD_LINE) == 0
    store = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
    counters = {k: int(v) for k, v in store.hgetall(f"{tag}:metrics").items()}
    assert counters.get("reconcile|quiet", 0) + counters.get("reconcile|active", 0) > 0, counters
    assert counters.get("republished|", 0) == 0, counters  # reconcile re-sent no queued work
    per_queue = {k: int(v) for k, v in store.hgetall(env[KEY_VARIABLE]).items()}
    shards = shard_names(tag, SHARDS)
    assert set(per_queue) <= set(shards), per_queue
    assert sum(1 for name in shards if per_queue.get(name)) >= 2, per_queue
