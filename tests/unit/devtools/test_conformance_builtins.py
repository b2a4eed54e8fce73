"""Our built-in scenarios (subflows, sleep, dynamic nodes) on the local runner."""

from __future__ import annotations

from pathlib import Path

from flowcraft_celery.devtools.conformance import LocalMode, load_scenarios, run_scenarios

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
BUILTINS = SCENARIOS / "builtins.json"


def test_builtin_scenarios_pass_locally() -> None:
    reports = list(run_scenarios(load_scenarios(BUILTINS), LocalMode()))
    assert len(reports) == 7
    assert [r.line() for r in reports if not r.passed] == []
