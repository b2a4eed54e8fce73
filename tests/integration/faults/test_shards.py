"""Sharded node queues: a deployment with FLOWCRAFT_QUEUE_SHARDS=3 spreads its runs over three
Azure queues, a worker started with the same setting consumes all of them, and every run completes
with each node once; a node's own queue (`config.queue`) is sharded the same way, and a worker
given that queue alone (`-Q heavy`) consumes all its shards; lowering the shard count with runs in
flight loses none of them (the messages left on shards no worker consumes any more are re-sent by
reconcile to the run's current shard).

Breaks no service (the shared dev services, with this module's own queue, key prefix and
database); stops only its own workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flowcraft_celery.distributed.core.shards import shard_names
from tests.integration import names
from tests.integration.faults import fault_nodes
from tests.integration.faults.kit import FaultKit, assert_completed_once, fault_kit
from tests.integration.polling import wait_for

RUN_TIMEOUT = 180.0
RUNS = 9
SHARDS = 3


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory, services_env: dict[str, str]) -> Iterator[FaultKit]:
    folder: Path = tmp_path_factory.mktemp("shards")
    with fault_kit(services_env, folder, "shards", FLOWCRAFT_QUEUE_SHARDS=str(SHARDS), FLOWCRAFT_STALL_SECONDS="4",
                   FLOWCRAFT_RECONCILE_INTERVAL="2",
                   FAULT_HEAVY_QUEUE=names.unique_name("shards-heavy")) as made:
        yield made


def _shards(kit: FaultKit) -> list[str]:
    return shard_names(kit.env["FLOWCRAFT_DEFAULT_QUEUE"], SHARDS)


def test_a_sharded_deployment_spreads_runs_over_its_shards_and_its_workers_run_them_all(kit: FaultKit) -> None:
    runs = kit.start("ft-wide", RUNS)  # no worker yet: the start messages wait on their shards
    waiting = {name: kit.queue_length(name) for name in _shards(kit)}
    assert sum(waiting.values()) == RUNS and sum(1 for n in waiting.values() if n) >= 2, waiting
    group = kit.group()
    group.worker(concurrency=2)
    group.wait_ready(90)
    docs = kit.wait_final(runs, RUN_TIMEOUT)
    assert_completed_once(kit, docs, fault_nodes.wide_nodes())
    wait_for(lambda: all(kit.queue_length(name) == 0 for name in _shards(kit)), 30, "every shard to drain")
    kit.stop_all()


def test_a_nodes_own_queue_is_sharded_and_a_worker_given_it_consumes_every_shard(kit: FaultKit) -> None:
    heavy = shard_names(kit.env["FAULT_HEAVY_QUEUE"], SHARDS)
    runs = kit.start("ft-heavy", RUNS)
    group = kit.group()
    group.worker(queues=kit.env["FLOWCRAFT_DEFAULT_QUEUE"], concurrency=2)  # -Q the default queue: its shards
    group.wait_ready(90)
    # nobody consumes the heavy queue yet: each run's `h` message waits on its shard of it
    wait_for(lambda: sum(kit.queue_length(name) for name in heavy) == RUNS, 90, "every run to reach its heavy node")
    assert sum(1 for name in heavy if kit.queue_length(name)) >= 2
    group.worker(queues=kit.env["FAULT_HEAVY_QUEUE"], concurrency=2)  # -Q heavy alone
    group.wait_ready(90)
    docs = kit.wait_final(runs, RUN_TIMEOUT)
    assert_completed_once(kit, docs, {"a", "h", "b"})
    wait_for(lambda: all(kit.queue_length(name) == 0 for name in heavy + _shards(kit)), 30, "every shard to drain")
    kit.stop_all()


def test_lowering_the_shard_count_with_runs_in_flight_completes_every_run_once(kit: FaultKit) -> None:
    runs = kit.start("ft-wide", RUNS)  # published for three shards
    assert sum(kit.queue_length(name) for name in _shards(kit)[1:]) > 0
    group = kit.group(FLOWCRAFT_QUEUE_SHARDS="1")  # the deployment now has one shard: shard 0 only
    group.worker(concurrency=2)
    group.beat()
    group.wait_ready(90)
    docs = kit.wait_final(runs, RUN_TIMEOUT)
    assert_completed_once(kit, docs, fault_nodes.wide_nodes())
    kit.stop_all()
