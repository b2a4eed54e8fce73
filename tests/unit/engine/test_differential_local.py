"""The local runner against the differential oracle (tests/differential), with hypothesis shrinking.

The same generated cases as the Celery differential test (tests/integration/distributed/
test_differential.py), judged on the local runner only: fast, so hypothesis can shrink a
failure to a minimal blueprint.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings

from tests.differential.examples import minimal_cases
from tests.differential.generator import Case, cases
from tests.differential.harness import run_local, violations


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_generated_blueprints_run_locally_as_the_oracle_expects(case: Case) -> None:
    trace = run_local(case)
    problems = violations(case, trace)
    assert not problems, (f"{problems}\nblueprints: {json.dumps(case.blueprints)}\n"
                          f"trace: {json.dumps(trace.to_json()['hits'])} status {trace.status} errors {trace.errors}")


@pytest.mark.parametrize("case", minimal_cases(), ids=lambda c: c.name)
def test_each_minimal_case_runs_locally_as_the_oracle_expects(case: Case) -> None:
    """The hand-built cases (tests/differential/examples.py), each once: side exits of single and
    nested loops, the join after an unused side exit (2 attempts, never a second start), ..."""
    trace = run_local(case)
    problems = violations(case, trace)
    assert not problems, f"{problems}\ntrace: {json.dumps(trace.to_json()['hits'])} status {trace.status}"
