"""Every shared conformance scenario on real Celery worker processes (2 workers, Azurite, Cosmos, Redis)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT.parent / "shared" / "conformance" / "scenarios.json"


def test_shared_scenarios_pass_on_celery_workers() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flowcraft_celery.cli", "conformance", str(SCENARIOS), "--mode", "celery",
         "--workers", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr[-3000:]
    assert lines[-1].endswith(" 0 failed"), result.stdout + result.stderr[-3000:]
    assert result.returncode == 0
    assert sum(line.startswith("PASS ") for line in lines) == len(lines) - 1
