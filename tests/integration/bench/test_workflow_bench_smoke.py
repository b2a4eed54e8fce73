"""The workflow benchmark's `--quick` run finishes on the dev services and prints its whole report."""

from __future__ import annotations

import os
import re

import pytest

from tests.integration.bench.quick_run import run_quick

SCENARIOS = {"chain of 5": 5, "fan 1->10->1": 12, "3 runs of 1->3->1": 15}
#: Run by the default mode and canvas only (the opt-ins' packs run long nodes in sequence by design).
LONG = ("long fan 1->5->1", 7)


@pytest.mark.integration
def test_quick_bench_reports_every_scenario_in_both_modes_and_on_canvas_with_targets_and_profile(
        services_env: dict[str, str]) -> None:
    code, out = run_quick("workflow_bench.py", {**os.environ, **services_env}, 180)
    assert code == 0, out[-4000:]
    assert re.search(r"round trip p50 [\d.]+ms", out), out
    for scenario, nodes in SCENARIOS.items():
        for system in ("flowcraft", "flowcraft+opt-ins", "canvas on Redis"):
            row = re.search(rf"^{re.escape(scenario)}\s+{re.escape(system)}\s+(\d+)\s", out, re.MULTILINE)
            assert row is not None, f"no row for {scenario} on {system}:\n{out}"
            assert int(row.group(1)) == nodes, f"{scenario} on {system} finished {row.group(1)} of {nodes} nodes"
    for system in ("flowcraft", "canvas on Redis"):
        row = re.search(rf"^{re.escape(LONG[0])}\s+{re.escape(system)}\s+(\d+)\s.*\s[\d.]+ms$", out, re.MULTILINE)
        assert row is not None and int(row.group(1)) == LONG[1], f"no complete long-fan row on {system}:\n{out}"
    verdicts = re.findall(r"^\s+(PASS|MISS) ", out, re.MULTILINE)
    # transport 3; per mode: hop, 2 ceiling shares, then per scenario canvas share, CPU, Cosmos, Redis, queue
    # (+ join arrivals in the fans); the default mode also the long fan (no canvas share) and its makespan
    per_mode = 3 + 5 * len(SCENARIOS) + 2
    assert len(verdicts) == 3 + 2 * per_mode + 5 + 1, out
    assert re.search(r"(PASS|MISS) long fan 1->5->1 of 1 s nodes on 2 idle workers: [\d.]+ s = [\d.]+x ideal", out)
    assert re.search(r"worker CPU/node [\d.]+ms = [\d.]+x canvas's", out), out
    assert len(re.findall(r"^  (before|between|after|median) +round trip p50 [\d.]+ms", out, re.MULTILINE)) == 4
    assert re.search(r"flowcraft\s+p50 [\d.]+ms\s+p95 [\d.]+ms", out), out
    assert "where the time goes" in out and "per node" in out
