"""Conformance scenarios on real Celery worker processes (2 workers, Azurite, Cosmos, Redis).

The reference scenarios (our copy of the conformance file), and ours for the built-ins
that file does not cover on workers (subflows, sleep, dynamic nodes), and issue 10's (loops,
batches, context writes, recursion, cycles, resume, strict values, ids), and issue 19's recorded
decisions. With healthy services no worker may rebuild a run's Redis state (a rebuild means the
completion check found work Redis did not know of).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = ROOT / "tests" / "scenarios" / "reference.json"
BUILTINS = ROOT / "tests" / "scenarios" / "builtins.json"
SEMANTICS = ROOT / "tests" / "scenarios" / "semantics.json"
DECISIONS = ROOT / "tests" / "scenarios" / "decisions.json"


@pytest.mark.parametrize("scenarios", [REFERENCE, BUILTINS, SEMANTICS, DECISIONS],
                         ids=["reference", "builtins", "semantics", "decisions"])
def test_scenarios_pass_on_celery_workers(scenarios: Path) -> None:
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
