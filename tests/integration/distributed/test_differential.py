"""Differential property test: random valid blueprints on the local runner and on Celery workers.

Hypothesis draws a batch of cases (tests/differential/generator.py) from a seed; each runs on
the local runner and on 2 real prefork workers (Azurite, the Cosmos emulator, Redis; a queue,
database and key prefix of this module's own), and must give identical traces, each agreeing
with the oracle's expectation (tests/differential/harness.py).

Sizes and reproduction (environment):
- FLOWCRAFT_DIFF_EXAMPLES: cases in the batch (default 15, the CI size); `make differential
  SEEDS=500` runs 500;
- FLOWCRAFT_DIFF_SEED: the batch's seed (default 6: a batch covering every feature of the generator;
  CI runs the same batch every time);
- FLOWCRAFT_DIFF_REPLAY: a failures file written by an earlier run: run exactly its cases again;
- FLOWCRAFT_DIFF_OUT: where failures are written (default .artifacts/differential/).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from flowcraft_celery.devtools.workers import WorkerGroup
from flowcraft_celery.distributed.client import Client
from tests.differential.generator import Case, sample_cases
from tests.differential.harness import Verdict, judge, run_celery, run_local, write_blueprints
from tests.integration import names
from tests.integration.celery_settings import celery_app_for

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = int(os.environ.get("FLOWCRAFT_DIFF_EXAMPLES", "15"))
SEED = int(os.environ.get("FLOWCRAFT_DIFF_SEED", "6"))
REPLAY = os.environ.get("FLOWCRAFT_DIFF_REPLAY", "")
OUT = Path(os.environ.get("FLOWCRAFT_DIFF_OUT", str(ROOT / ".artifacts" / "differential")))
#: Runs in flight on the workers at once.
PARALLEL = int(os.environ.get("FLOWCRAFT_DIFF_PARALLEL", "6"))


def batch() -> list[Case]:
    """The cases of this run: a replayed failures file, or a fresh batch from the seed."""
    if REPLAY:
        data = json.loads(Path(REPLAY).read_text(encoding="utf-8"))
        return [Case.from_json(item["case"]) for item in data["failures"]]
    return sample_cases(EXAMPLES, SEED)


@dataclass
class Deployment:
    """The module's workers, client and Redis."""

    client: Client
    redis: redis.Redis
    cases: list[Case]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, services_env: dict[str, str]) -> Iterator[Deployment]:
    """Write the batch's blueprints, start 2 prefork workers (Celery's default concurrency) that
    run them, and remove every queue, key and database of this module at the end."""
    cases = batch()
    folder = tmp_path_factory.mktemp("differential-blueprints")
    write_blueprints(cases, folder)
    tag = names.unique_name("diff")
    env = {**services_env, "FLOWCRAFT_DEFAULT_QUEUE": tag, "FLOWCRAFT_KEY_PREFIX": f"{tag}:",
           "FLOWCRAFT_COSMOS_DATABASE": tag, "FLOWCRAFT_NODE_MODULES": "tests.differential.nodes",
           "FLOWCRAFT_BLUEPRINTS": str(folder), "FLOWCRAFT_TASK_EVENTS": "false",
           "FLOWCRAFT_DIFF_TRACE_KEY": f"{tag}:hits"}
    client_redis = redis.Redis.from_url(env["REDIS_URL"])
    with celery_app_for(env) as app, WorkerGroup(env, tmp_path_factory.mktemp("differential-logs"), cwd=ROOT) as group:
        try:
            for _ in range(2):
                group.worker(concurrency=os.cpu_count() or 2)
            group.wait_ready(120)
            yield Deployment(Client(app), client_redis, cases)
        finally:
            group.stop()
            _remove(env, tag, client_redis)


def _remove(env: dict[str, str], tag: str, client: redis.Redis) -> None:
    """Delete the module's Redis keys, Azure queues and Cosmos database."""
    from azure.storage.queue import QueueServiceClient

    from flowcraft_celery.stores.cosmos_client import get_client

    for key in client.scan_iter(f"{tag}:*"):
        client.delete(key)
    queues = QueueServiceClient.from_connection_string(env["AZURE_STORAGE_CONNECTION_STRING"])
    for queue in queues.list_queues(name_starts_with=tag):
        with contextlib.suppress(Exception):
            queues.delete_queue(queue.name)
    with contextlib.suppress(Exception):
        get_client().delete_database(tag)


def report(verdicts: list[Verdict], seconds: float) -> tuple[str, Path | None]:
    """The summary line; the failures written (seed, blueprints, expectation, both traces) for replay."""
    failed = [v for v in verdicts if v.failed]
    features = Counter(f for v in verdicts for f in v.case.features)
    by_feature = Counter(f for v in failed for f in v.case.features)
    origin = f"replay of {REPLAY}" if REPLAY else f"seed {SEED}"
    line = (f"differential: {len(verdicts)} blueprints tried ({origin}), "
            f"{len(failed)} failed, {seconds:.0f} s; failing share by feature: "
            + ", ".join(f"{f} {by_feature[f]}/{n}" for f, n in sorted(features.items())))
    if not failed:
        return line, None
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"failures-{'replay' if REPLAY else f'seed{SEED}'}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    seed = None if REPLAY else SEED
    document: dict[str, Any] = {"seed": seed, "examples": len(verdicts), "summary": line,
                                "failures": [v.to_json(seed) for v in failed]}
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    return line, path


def test_random_blueprints_give_identical_traces_on_both_runners(deployment: Deployment) -> None:
    started = time.monotonic()
    cases = deployment.cases
    local = {case.name: run_local(case) for case in cases}
    celery = run_celery(cases, deployment.client, deployment.redis, parallel=PARALLEL)
    verdicts = [judge(case, local[case.name], celery[case.name]) for case in cases]
    line, path = report(verdicts, time.monotonic() - started)
    print(line)
    details = []
    for verdict in verdicts:
        if verdict.failed:
            problems = "; ".join(f"[{k}] " + " | ".join(v) for k, v in verdict.problems.items() if v)
            details.append(f"{verdict.case.name} ({', '.join(verdict.case.features)}): {problems}")
    for detail in details:
        print("FAIL", detail)
    assert not details, f"{line}\nfailures written to {path}\n" + "\n".join(details)
