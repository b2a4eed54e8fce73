"""The conformance runner: scenarios of SPEC §10 run through a mode, then checked.

A mode is only a way to execute one scenario (`Mode.execute`) and report its outcome; the
loading, resume loop and checks are shared, so every mode is judged by the same rules.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from flowcraft_celery.devtools.behaviours import BehaviourError
from flowcraft_celery.errors import FlowcraftError
from flowcraft_celery.model.blueprint import Blueprint, BlueprintFormatError


class ScenarioFormatError(FlowcraftError, ValueError):
    """The scenario file does not follow the schema; names the scenario and field."""


@dataclass
class Scenario:
    """One parsed scenario."""

    name: str
    blueprints: dict[str, Blueprint]
    start: str
    implementations: dict[str, Any]
    initial_context: dict[str, Any]
    resume: list[dict[str, Any]]
    expect: dict[str, Any]
    description: str = ""
    load_error: str | None = None


@dataclass
class Outcome:
    """What a mode observed: final status, context, errors and invocation counts."""

    status: str
    context: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)


class Mode(Protocol):
    """A way to execute scenarios (local runner, Celery workers, ...)."""

    def execute(self, scenario: Scenario) -> Outcome:
        """Run the scenario to its end (applying `scenario.resume` while awaiting)."""


def load_scenarios(path: str | Path) -> list[Scenario]:
    """Parse a scenarios file; a malformed scenario is kept with `load_error` so it reports FAIL."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ScenarioFormatError(f"{path}: cannot read scenarios: {exc}") from exc
    if not isinstance(data, list):
        raise ScenarioFormatError(f"{path}: must be a JSON array of scenarios")
    return [_parse(item, index) for index, item in enumerate(data)]


def _parse(item: Any, index: int) -> Scenario:
    if not isinstance(item, dict):
        raise ScenarioFormatError(f"scenario [{index}] must be an object")
    name = str(item.get("name") or f"scenario-{index}")
    scenario = Scenario(
        name=name, blueprints={}, start="", implementations=dict(item.get("implementations") or {}),
        initial_context=dict(item.get("initial_context") or {}), resume=list(item.get("resume") or []),
        expect=dict(item.get("expect") or {}), description=str(item.get("description", "")),
    )
    try:
        if "blueprints" in item:
            raw = item["blueprints"]
            if not isinstance(raw, dict):
                raise ScenarioFormatError("blueprints must be an object {id: blueprint}")
            scenario.blueprints = {k: Blueprint.from_dict(v, default_id=k) for k, v in raw.items()}
            scenario.start = str(item.get("start", ""))
            if scenario.start not in scenario.blueprints:
                raise ScenarioFormatError(f"start {scenario.start!r} is not one of the blueprints")
        else:
            blueprint = Blueprint.from_dict(item.get("blueprint"), default_id=name)
            scenario.blueprints = {blueprint.id: blueprint}
            scenario.start = blueprint.id
    except (BlueprintFormatError, ScenarioFormatError) as exc:
        scenario.load_error = str(exc)
    return scenario


def check(scenario: Scenario, outcome: Outcome) -> list[str]:
    """Every way the outcome misses the scenario's expectations (empty: it passes)."""
    expect = scenario.expect
    problems: list[str] = []
    if "status" in expect and outcome.status != expect["status"]:
        detail = "; ".join(e.get("message", "") for e in outcome.errors)
        problems.append(f"status {outcome.status!r}, expected {expect['status']!r}"
                        + (f" ({detail})" if detail else ""))
    needle = expect.get("error_contains")
    if needle:
        texts = [f"{e.get('code', '')} {e.get('message', '')}".lower() for e in outcome.errors]
        if not any(str(needle).lower() in t for t in texts):
            problems.append(f"no error contains {needle!r} (errors: {[e.get('message') for e in outcome.errors]})")
    ctx = outcome.context
    for node_id, value in (expect.get("outputs") or {}).items():
        key = f"_outputs.{node_id}"
        if key not in ctx:
            problems.append(f"no output recorded for {node_id!r}")
        elif ctx[key] != value:
            problems.append(f"output of {node_id!r} is {ctx[key]!r}, expected {value!r}")
    for key, value in (expect.get("context") or {}).items():
        if key not in ctx:
            problems.append(f"context has no key {key!r}")
        elif ctx[key] != value:
            problems.append(f"context[{key!r}] is {ctx[key]!r}, expected {value!r}")

    def ran(node_id: str) -> bool:
        return outcome.attempts.get(node_id, 0) > 0 or f"_outputs.{node_id}" in ctx

    problems += [f"{n!r} did not run" for n in expect.get("executed") or [] if not ran(n)]
    problems += [f"{n!r} ran but should not have" for n in expect.get("not_executed") or [] if ran(n)]
    for node_id, count in (expect.get("attempts") or {}).items():
        seen = outcome.attempts.get(node_id, 0)
        if seen != count:
            problems.append(f"{node_id!r} was invoked {seen} times, expected {count}")
    return problems


@dataclass
class Report:
    """One scenario's verdict."""

    name: str
    problems: list[str]

    @property
    def passed(self) -> bool:
        """True when nothing was wrong."""
        return not self.problems

    def line(self) -> str:
        """`PASS name` or `FAIL name: why`."""
        return f"PASS {self.name}" if self.passed else f"FAIL {self.name}: {'; '.join(self.problems)}"


def run_scenarios(scenarios: list[Scenario], mode: Mode, only: str | None = None) -> Iterator[Report]:
    """Execute and check each scenario, yielding verdicts as they come."""
    for scenario in scenarios:
        if only and only not in scenario.name:
            continue
        if scenario.load_error:
            outcome = Outcome("invalid", errors=[{"code": "MALFORMED_BLUEPRINT", "message": scenario.load_error}])
        else:
            try:
                outcome = mode.execute(scenario)
            except BehaviourError as exc:
                yield Report(scenario.name, [f"bad behaviour spec: {exc}"])
                continue
        yield Report(scenario.name, check(scenario, outcome))


def invalid_outcome(issues: Any) -> Outcome:
    """The outcome of a blueprint rejected by validation."""
    return Outcome("invalid", errors=[{"code": i.code, "message": i.message} for i in issues])


def refused_outcome(exc: Exception) -> Outcome:
    """The outcome of a start refused for its input (values or ids): counted as invalid."""
    return Outcome("invalid", errors=[{"code": str(getattr(exc, "code", "INVALID_INPUT")), "message": str(exc)}])


def resume_refusal(exc: Exception) -> dict[str, Any]:
    """The error record of a refused resume (the run stays as it was)."""
    return {"code": "RESUME_REFUSED", "message": str(exc)}


def summary(reports: list[Report]) -> str:
    """The closing line: `N passed, M failed`."""
    passed = sum(r.passed for r in reports)
    return f"{passed} passed, {len(reports) - passed} failed"


class LocalMode:
    """Scenarios on the in-process local runner."""

    def execute(self, scenario: Scenario) -> Outcome:
        from flowcraft_celery.devtools.behaviours import MemoryRecorder, registry_for
        from flowcraft_celery.local.runner import LocalRunner
        from flowcraft_celery.model.validation import BlueprintValidationError

        recorder = MemoryRecorder()
        runner = LocalRunner(registry_for(scenario.implementations, recorder), scenario.blueprints)
        try:
            result = runner.run(scenario.blueprints[scenario.start], scenario.initial_context)
        except BlueprintValidationError as exc:
            return invalid_outcome(exc.issues)
        except ValueError as exc:  # values or ids refused at start
            return refused_outcome(exc)
        refusals: list[dict[str, Any]] = []
        for step in _resume_steps(scenario.resume):
            if result.status != "awaiting":
                break
            try:
                result = runner.resume(result.run_id, step.get("action"), step.get("output"), step.get("node"))
            except ValueError as exc:
                refusals.append(resume_refusal(exc))
                break
        return Outcome(result.status, result.context, result.errors + refusals, recorder.counts())


def scenarios_env(path: str, key: str) -> dict[str, str]:
    """Environment that makes Celery workers and the runner load the scenarios of `path`
    (read by `flowcraft_celery.devtools.conformance_celery` when it is imported)."""
    return {
        "FLOWCRAFT_SCENARIOS": str(Path(path).resolve()),
        "FLOWCRAFT_CONFORMANCE_KEY": key,
        "FLOWCRAFT_NODE_MODULES": "flowcraft_celery.devtools.conformance_celery",
        "FLOWCRAFT_BLUEPRINTS": "flowcraft_celery.devtools.conformance_celery:blueprints",
    }


def _resume_steps(steps: list[Any]) -> Iterator[Mapping[str, Any]]:
    for step in steps:
        yield step if isinstance(step, Mapping) else {}
