"""Losing Redis never produces a false status: runs are rebuilt from Cosmos and complete once.
Messages a run does not expect (forged, stale, unknown run) are dead-lettered, never trusted.

One private Redis / Azurite / Cosmos emulator set for the module (Redis is restarted, flushed
and paused here, never the shared dev services), two workers and a beat.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from flowcraft_celery.devtools.workers import WorkerGroup
from flowcraft_celery.distributed.core.message import node_message
from flowcraft_celery.model.blueprint import Blueprint
from tests.integration.faults import fault_nodes
from tests.integration.faults.kit import FaultKit, assert_completed_once, assert_recorded_once, fault_kit, is_final
from tests.integration.faults.private import PrivateServices
from tests.integration.polling import wait_for

RUN_TIMEOUT = 150.0


@dataclass
class Faults:
    kit: FaultKit
    services: PrivateServices
    workers: WorkerGroup | None = None

    def running(self) -> WorkerGroup:
        """Two workers (concurrency 2) and a beat, started on first use."""
        if self.workers is None:
            self.workers = self.kit.group()
            self.workers.worker(concurrency=2)
            self.workers.worker(concurrency=2)
            self.workers.beat()
            self.workers.wait_ready(90)
        return self.workers

    def stop_workers(self) -> None:
        if self.workers is not None:
            self.workers.stop()
            self.workers = None

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.kit.env["REDIS_URL"], socket_timeout=10)


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    folder: Path = tmp_path_factory.mktemp("redis-loss")
    with PrivateServices(folder / "services") as services, \
            fault_kit(services.env(), folder, "redisloss", FLOWCRAFT_STALL_SECONDS="4",
                      FLOWCRAFT_RECONCILE_INTERVAL="2", FLOWCRAFT_VISIBILITY_TIMEOUT="10") as kit:
        yield Faults(kit, services)


def payload(run_id: str, blueprint: Blueprint, node_id: str, iteration: int, value: Any,
            **changes: Any) -> dict[str, Any]:
    """A node message's wire form, as a worker would send it."""
    return node_message(run_id, blueprint, node_id, iteration, value, **changes).to_wire()

def assert_never_ran_after_completion(kit: FaultKit, run_id: str, completed_at: float) -> None:
    late = [t for t in kit.call_times(run_id) if t > completed_at + 0.5]
    assert not late, f"run {run_id}: {len(late)} node(s) started after the run completed"


def test_a_forged_message_for_an_unknown_run_is_dead_lettered_not_run(faults: Faults) -> None:
    faults.running()
    kit = faults.kit
    blueprint = kit.client.runtime.blueprints["ft-other"]
    forged = payload("forged-run-0001", blueprint, "x", 0, None)
    kit.client.app.send_task("flowcraft.node.ft-step", kwargs={"msg": forged}, queue=kit.env["FLOWCRAFT_DEFAULT_QUEUE"])
    wait_for(lambda: kit.dead_letters() >= 1, 60, "the forged message in the dead-letter queue")
    assert kit.calls("forged-run-0001") == {}
    assert kit.client.runtime.statuses.get("forged-run-0001") is None
    wait_for(lambda: "forged-run-0001" in kit.logs() and "no status document" in kit.logs(), 10, "the WARNING")
    assert any("no run 'forged-run-0001'" in reason for reason in kit.dead_letter_reasons())


def test_valid_celery_messages_that_are_not_node_messages_are_dead_lettered_with_the_reason(faults: Faults) -> None:
    faults.running()
    kit = faults.kit
    real = kit.start("ft-other")[0]
    good = payload(real, kit.client.runtime.blueprints["ft-other"], "x", 0, None)
    poison = {  # each a well-formed Celery message of a node task, with arguments no node message has
        "argument(s) 'extra'": ((), {"msg": good, "extra": 1}),
        "positional arguments": ((good,), {}),
        "exactly one of msg": ((), {}),
        "field 'it' must be a whole number": ((), {"msg": {**good, "it": "zero"}}),
        "msgs must be a non-empty list": ((), {"msgs": []}),
        "msgs[1]: field 'node' must be non-empty text": ((), {"msgs": [good, {**good, "node": 7}]}),
    }
    dead_before = kit.dead_letters()
    for args, kwargs in poison.values():
        kit.client.app.send_task("flowcraft.node.ft-step", args=list(args), kwargs=kwargs,
                                 queue=kit.env["FLOWCRAFT_DEFAULT_QUEUE"])
    wait_for(lambda: kit.dead_letters() >= dead_before + len(poison), 60, "every poison message dead-lettered")
    reasons = kit.dead_letter_reasons()
    for expected in poison:
        assert any(expected in reason for reason in reasons), (expected, reasons)
    assert kit.client.wait(real, RUN_TIMEOUT)["status"] == "completed"
    time.sleep(2)
    assert kit.calls(real) == {"x": 1}  # the run's own message ran it once; no poison copy did
    assert kit.logs().count("not a flowcraft node message") >= len(poison)


def test_messages_a_running_run_does_not_expect_are_dead_lettered_and_the_run_goes_on(faults: Faults) -> None:
    faults.running()
    kit = faults.kit
    run_id = kit.start("ft-slow")[0]  # `long` runs 8 s, then `b`
    wait_for(lambda: kit.calls(run_id).get("long") == 1, 30, "the long node to start")
    slow = kit.client.runtime.blueprints["ft-slow"]
    forged = {  # reason expected in the dead letter -> a well-formed node message naming the live run
        "ghost@0 is not due": payload(run_id, slow, "ghost", 0, None),
        "names blueprint 'ft-other'": payload(run_id, kit.client.runtime.blueprints["ft-other"], "long", 0, None),
        "names blueprint version '999'": {**payload(run_id, slow, "long", 0, None), "ver": "999"},
        "b@0 is not due": payload(run_id, slow, "b", 0, None),
        "b@3 is not due": payload(run_id, slow, "b", 3, None),
        "was not resumed": payload(run_id, slow, "long", 0, None, resume={"action": None, "output": 1}),
        "reports child run 'stale-child'": payload(run_id, slow, "long", 0, None,
                                                   child={"runId": "stale-child", "status": "failed"}),
        "is not sleeping": payload(run_id, slow, "long", 0, None, wake=True),
    }
    dead_before = kit.dead_letters()
    for message in forged.values():
        kit.client.app.send_task("flowcraft.node.ft-step", kwargs={"msg": message},
                                 queue=kit.env["FLOWCRAFT_DEFAULT_QUEUE"])
    wait_for(lambda: kit.dead_letters() >= dead_before + len(forged), 60, "every forged message dead-lettered")
    assert kit.status(run_id)["status"] == "running"  # long is still running: nothing forged advanced the run
    reasons = kit.dead_letter_reasons()
    for expected in forged:
        assert any(expected in reason for reason in reasons), (expected, reasons)
    doc = kit.client.wait(run_id, RUN_TIMEOUT)
    assert doc["status"] == "completed", doc.get("errors")
    assert kit.calls(run_id) == {"long": 1, "b": 1}
    assert_recorded_once(kit, run_id, {"long", "b"})
    assert kit.logs().count(f"of run {run_id}: ") >= len(forged)  # one WARNING each, naming the run


def test_waits_and_sleeps_whose_redis_keys_are_gone_go_on_and_every_join_runs_once(faults: Faults) -> None:
    faults.running()
    kit = faults.kit
    run_id = kit.start("ft-longwait")[0]
    napping = kit.start("ft-nap")[0]
    doc = kit.client.wait(run_id, RUN_TIMEOUT)
    assert doc["status"] == "awaiting" and doc["awaiting"] == ["gate@0"]
    wait_for(lambda: kit.calls(run_id).get("side") == 1 and kit.calls(run_id).get("first") == 1, 30,
             "the side branch and the any-join")
    wait_for(lambda: (kit.status(napping).get("sleeping") or {}).get("nap@0") is not None, 30, "the nap")
    faults.redis().flushall()  # what expiry of every key (or a restart without persistence) leaves
    kit.client.resume(run_id, None, {"by": "me"})
    doc = kit.client.wait(run_id, RUN_TIMEOUT)
    assert doc["status"] == "completed", doc.get("errors")
    assert kit.calls(run_id) == {"a": 1, "side": 1, "first": 1, "j": 1, "after": 1}
    assert_recorded_once(kit, run_id, {"a", "gate", "side", "first", "j", "after"})
    doc = kit.client.wait(napping, RUN_TIMEOUT)
    assert doc["status"] == "completed", doc.get("errors")
    assert kit.calls(napping) == {"a": 1, "b": 1}
    assert_recorded_once(kit, napping, {"a", "nap", "b"})


def test_a_run_that_cannot_be_rebuilt_after_redis_lost_it_fails_naming_the_loss(faults: Faults) -> None:
    faults.running()
    kit = faults.kit
    run_id = kit.start("ft-longwait")[0]
    assert kit.client.wait(run_id, RUN_TIMEOUT)["status"] == "awaiting"
    wait_for(lambda: kit.calls(run_id).get("first") == 1, 30, "the any-join")
    # Cosmos records something the blueprint cannot replay: the gate's result added a malformed node
    kit.client.runtime.contexts.record_output(run_id, "gate", 0, None, None, [{"no": "id"}])
    faults.redis().flushall()
    late = payload(run_id, kit.client.runtime.blueprints["ft-longwait"], "side", 0, None)
    kit.client.app.send_task("flowcraft.node.ft-step", kwargs={"msg": late}, queue=kit.env["FLOWCRAFT_DEFAULT_QUEUE"])
    wait_for(lambda: is_final(kit.status(run_id)), 60, "the run to end")
    doc = kit.status(run_id)
    assert doc["status"] == "failed", doc
    assert doc["errors"][0]["type"] == "RedisStateLost"
    assert "Redis lost the run's state and it cannot be rebuilt from Cosmos" in doc["errors"][0]["message"]
    time.sleep(2)
    assert kit.calls(run_id) == {"a": 1, "side": 1, "first": 1}


def test_redis_restarted_empty_mid_run_completes_every_run_with_each_output_once(faults: Faults) -> None:
    faults.running()
    kit = faults.kit
    runs = kit.start("ft-wide", 8)
    wait_for(lambda: sum(sum(kit.calls(r).values()) for r in runs) >= 20, 90, "the runs to be under way")
    faults.services.restart_empty("redis")
    docs = kit.wait_final(runs, RUN_TIMEOUT)
    for run_id, doc in docs.items():
        assert doc["status"] == "completed", (run_id, doc.get("errors"))
        assert_recorded_once(kit, run_id, fault_nodes.wide_nodes())
        calls = kit.calls(run_id)
        assert set(calls) == fault_nodes.wide_nodes()
        assert max(calls.values()) <= 2, calls
        assert_never_ran_after_completion(kit, run_id, float(doc["lastUpdated"]))


def test_redis_paused_20_s_delays_runs_but_every_run_completes_once(faults: Faults) -> None:
    faults.running()
    kit = faults.kit
    runs = kit.start("ft-wide", 5)
    wait_for(lambda: sum(sum(kit.calls(r).values()) for r in runs) >= 8, 90, "the runs to be under way")
    faults.services.pause_for("redis", 20)
    docs = kit.wait_final(runs, RUN_TIMEOUT)
    for run_id, doc in docs.items():
        assert doc["status"] == "completed", (run_id, doc.get("errors"))
        assert_recorded_once(kit, run_id, fault_nodes.wide_nodes())
        assert max(kit.calls(run_id).values()) <= 2


def test_reconcile_alone_after_redis_lost_its_state_completes_nothing_falsely(faults: Faults) -> None:
    faults.stop_workers()
    kit = faults.kit
    runs = kit.start("ft-wide", 4)
    faults.services.restart_empty("redis")
    beat_only = kit.group()
    beat_only.beat()
    time.sleep(10)  # reconcile passes every 2 s, past the 4 s stall threshold
    assert [kit.status(r)["status"] for r in runs] == ["running"] * len(runs)
    assert all(kit.outputs(r) == [] for r in runs)
    workers = kit.group()
    workers.worker(concurrency=2)
    workers.wait_ready(90)
    docs = kit.wait_final(runs, RUN_TIMEOUT)
    assert_completed_once(kit, docs, fault_nodes.wide_nodes())
