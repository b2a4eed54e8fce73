"""A node that kills its worker process every time it runs fails its run within one stall period,
with one dead-letter entry, and `show` gives its crash count: at the default crash limit, and with
a limit at or above the transport's delivery limit (which would let the transport dead-letter it
first, and reconcile re-send it, if the limit were not kept below).

Real `celery worker` and `celery beat` processes on the shared dev services (only used, with this
module's own queue, key prefix and database).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from flowcraft_celery.settings import Settings
from tests.integration.faults.kit import ROOT, FaultKit, assert_recorded_once, fault_kit
from tests.integration.polling import wait_for

#: The default stall period (FLOWCRAFT_STALL_SECONDS): the run must fail within it.
STALL_SECONDS = 60.0
#: The transport's default `max_delivery_count`.
DELIVERY_LIMIT = 5
#: Seconds to watch the dead-letter queue after the run failed, for a second entry.
SETTLE = 8.0


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory, services_env: dict[str, str]) -> Iterator[FaultKit]:
    with fault_kit(services_env, tmp_path_factory.mktemp("crash-loop"), "crash",
                   FLOWCRAFT_RECONCILE_INTERVAL="5") as made:
        yield made


def _show(kit: FaultKit, run_id: str) -> dict[str, Any]:
    """`flowcraft-celery show RUN --json` from this checkout."""
    result = subprocess.run([sys.executable, "-m", "flowcraft_celery.cli", "show", run_id, "--json"], cwd=ROOT,
                            env={**os.environ, **kit.env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@pytest.mark.parametrize(("setting", "limit"), [
    (None, Settings().crash_limit),
    (str(DELIVERY_LIMIT + 5), DELIVERY_LIMIT - 1),  # kept below the delivery limit
], ids=["default limit", "limit above the delivery limit"])
def test_a_crash_looping_node_fails_its_run_in_one_stall_period_with_one_dead_letter(
        kit: FaultKit, setting: str | None, limit: int) -> None:
    group = kit.group(**({"FLOWCRAFT_MAX_NODE_CRASHES": setting} if setting else {}))
    try:
        group.worker(concurrency=1)
        group.beat()
        group.wait_ready(90)
        dead_before = kit.dead_letters()
        began = time.monotonic()
        run_id = kit.start("ft-crashloop")[0]
        doc = kit.client.wait(run_id, STALL_SECONDS, interval=0.5)
        took = time.monotonic() - began
        assert doc["status"] == "failed", (took, doc)
        assert took < STALL_SECONDS
        [error] = doc["errors"]
        assert error["nodeId"] == "boom" and f"crashed its worker process {limit} times" in error["message"], error
        calls = kit.calls(run_id)
        assert calls["a"] == 1 and calls["boom"] == limit and "b" not in calls, calls
        assert_recorded_once(kit, run_id, {"a"})
        wait_for(lambda: kit.dead_letters() > dead_before, 30, "the crashing node's message in the dead-letter queue")
        time.sleep(SETTLE)  # beat reconciles every 5 s: a re-sent copy would add a second entry meanwhile
        assert kit.dead_letters() == dead_before + 1
        assert kit.queue_length() == 0
        [boom] = [row for row in _show(kit, run_id)["nodes"] if row["node"] == "boom"]
        assert boom["state"] == "failed" and boom["crashes"] == limit, boom
        assert boom["detail"] == f"crashed its worker process {limit} times"
    finally:
        group.stop()
