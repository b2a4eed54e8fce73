"""Our scenarios for loops, dynamic nodes, batches, context writes, recursion, cycles, resume,
strict values and ids (issue 10) on the local runner; the Celery test runs the same file."""

from __future__ import annotations

from pathlib import Path

from flowcraft_celery.devtools.conformance import LocalMode, load_scenarios, run_scenarios

SEMANTICS = Path(__file__).resolve().parents[2] / "scenarios" / "semantics.json"


def test_semantics_scenarios_pass_locally() -> None:
    reports = list(run_scenarios(load_scenarios(SEMANTICS), LocalMode()))
    assert len(reports) >= 19
    assert [r.line() for r in reports if not r.passed] == []
