"""The load benchmark's `--quick` run finishes both modes on the dev services and prints its whole report."""

from __future__ import annotations

import os
import re

import pytest

from tests.integration.bench.quick_run import run_quick

MODES = ("inline+packing", "one task per node")
NODES = 5 * (20 + 3)


@pytest.mark.integration
def test_quick_load_bench_finishes_every_node_in_both_modes_and_prints_the_targets(
        services_env: dict[str, str]) -> None:
    code, out = run_quick("load_bench.py", {**os.environ, **services_env}, 240)
    assert code == 0, out[-4000:]
    for mode in MODES:
        row = re.search(rf"^{re.escape(mode)}\s+(\d+)/(\d+)\s", out, re.MULTILINE)
        assert row is not None, f"no row for {mode}:\n{out}"
        assert (int(row.group(1)), int(row.group(2))) == (NODES, NODES), f"{mode} finished {row.group(0)}"
    assert re.search(r"^throughput: one task per node [\d.]+ nodes/s = [\d.]+x", out, re.MULTILINE), out
    verdicts = re.findall(r"^  (PASS|MISS) ", out, re.MULTILINE)
    assert len(verdicts) == 1 + 4 * len(MODES), out
    assert re.search(r"^  PASS one task per node: all 5 runs completed", out, re.MULTILINE), out
