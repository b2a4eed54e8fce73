"""Recorded decisions (SPEC §3.2 "decided once") on the local runner; the Celery test runs the same file."""

from __future__ import annotations

from pathlib import Path

from flowcraft_celery.devtools.conformance import LocalMode, load_scenarios, run_scenarios

DECISIONS = Path(__file__).resolve().parents[2] / "scenarios" / "decisions.json"


def test_decision_scenarios_pass_locally() -> None:
    reports = list(run_scenarios(load_scenarios(DECISIONS), LocalMode()))
    assert len(reports) >= 4
    assert [r.line() for r in reports if not r.passed] == []
