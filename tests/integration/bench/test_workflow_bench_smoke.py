"""The workflow benchmark's `--quick` run finishes on the dev services and prints its whole report."""

from __future__ import annotations

import os
import re

import pytest

from tests.integration.bench.quick_run import run_quick

SCENARIOS = {"chain of 5": 5, "fan 1->10->1": 12, "3 runs of 1->3->1": 15}


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
    verdicts = re.findall(r"^  (PASS|MISS) ", out, re.MULTILINE)
    per_mode = 2 + 2 * len(SCENARIOS) + 2
    assert len(verdicts) == 3 + 2 * per_mode, out
    assert re.search(r"flowcraft\s+p50 [\d.]+ms\s+p95 [\d.]+ms", out), out
    assert "where the time goes" in out and "per node" in out
