"""Conformance scenarios on real Celery workers.

Workers and the runner import this module (`FLOWCRAFT_NODE_MODULES`) with the scenarios file
in `FLOWCRAFT_SCENARIOS`: every scenario's behaviours and blueprints are registered under a
`<scenario>/` namespace so scenarios sharing `uses` names never collide, and invocations are
counted in Redis (`FLOWCRAFT_CONFORMANCE_KEY`) so counts cover every worker process.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import redis

from flowcraft_celery.devtools.behaviours import build, counted
from flowcraft_celery.devtools.conformance import (
    Outcome,
    Scenario,
    invalid_outcome,
    load_scenarios,
    refused_outcome,
    resume_refusal,
)
from flowcraft_celery.distributed.runs.errors import RunError
from flowcraft_celery.engine.registry import default_registry
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.ids import InvalidIdError
from flowcraft_celery.model.json_values import NotJsonError
from flowcraft_celery.model.validation import BUILTIN_USES, BlueprintValidationError
from flowcraft_celery.settings import Settings


class RedisRecorder:
    """Counts invocations in a Redis hash shared by all workers."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self._redis = client
        self._key = key

    def hit(self, node_id: str) -> None:
        self._redis.hincrby(self._key, node_id, 1)

    def counts(self) -> dict[str, int]:
        raw: dict[bytes, bytes] = self._redis.hgetall(self._key)  # type: ignore[assignment]
        return {k.decode(): int(v) for k, v in raw.items()}


def _ns(scenario: str, name: str) -> str:
    """A name under the scenario's namespace (`:`, a character every store accepts in ids)."""
    return f"{scenario}:{name}"


def _namespaced_spec(spec: Any, scenario: str) -> Any:
    """A behaviour spec whose `spawn` targets are namespaced too."""
    if not isinstance(spec, dict):
        return spec
    out = dict(spec)
    if out.get("kind") == "spawn" and isinstance(out.get("uses"), str):
        out["uses"] = _ns(scenario, out["uses"])
    if "then" in out:
        out["then"] = _namespaced_spec(out["then"], scenario)
    return out


def namespaced_blueprint(blueprint: Blueprint, scenario: str) -> Blueprint:
    """A copy with id, non-built-in `uses`, subflow ids and batch worker keys under the namespace."""
    data = copy.deepcopy(blueprint.to_dict())
    data["id"] = _ns(scenario, blueprint.id)
    for node in data["nodes"]:
        params = node.get("params") or {}
        if node["uses"] not in BUILTIN_USES:
            node["uses"] = _ns(scenario, node["uses"])
        if node["uses"] == "subflow" and isinstance(params.get("blueprintId"), str):
            params["blueprintId"] = _ns(scenario, params["blueprintId"])
        if node["uses"] == "batch-scatter" and isinstance(params.get("workerUsesKey"), str):
            params["workerUsesKey"] = _ns(scenario, params["workerUsesKey"])
    return Blueprint.from_dict(data)


def _recorder(scenario: str) -> RedisRecorder:
    key = f"{os.environ.get('FLOWCRAFT_CONFORMANCE_KEY', 'flowcraft:conformance')}:{scenario}"
    return RedisRecorder(redis.Redis.from_url(Settings.from_env().redis_url), key)


def _load() -> list[Blueprint]:
    """Register every scenario's behaviours; return its blueprints (the catalog source)."""
    path = os.environ.get("FLOWCRAFT_SCENARIOS")
    if not path:
        return []
    found: list[Blueprint] = []
    for scenario in load_scenarios(path):
        if scenario.load_error:
            continue
        recorder = _recorder(scenario.name)
        for uses, spec in scenario.implementations.items():
            body = build(_namespaced_spec(spec, scenario.name), f"{scenario.name}.implementations.{uses}")
            default_registry.register(_ns(scenario.name, uses), counted(body, recorder))
        found += [namespaced_blueprint(b, scenario.name) for b in scenario.blueprints.values()]
    return found


blueprints = _load()


class CeleryMode:
    """Scenarios through the client on workers started elsewhere with the same environment."""

    def __init__(self, timeout: float = 90.0) -> None:
        from flowcraft_celery.distributed.client import Client

        self.client = Client()
        self.timeout = timeout

    def execute(self, scenario: Scenario) -> Outcome:
        recorder = _recorder(scenario.name)
        try:
            run = self.client.start(_ns(scenario.name, scenario.start), scenario.initial_context)
        except BlueprintValidationError as exc:
            return invalid_outcome(exc.issues)
        except (NotJsonError, InvalidIdError) as exc:
            return refused_outcome(exc)
        doc = run.wait(self.timeout)
        refusals: list[dict[str, Any]] = []
        for step in scenario.resume:
            if doc.get("status") != "awaiting":
                break
            try:
                self.client.resume(run.run_id, step.get("action"), step.get("output"), step.get("node"))
            except RunError as exc:
                refusals.append(resume_refusal(exc))
                break
            doc = self.client.wait(run.run_id, self.timeout)
        result = self.client.result(run.run_id)
        errors = list(doc.get("errors") or result.get("errors") or []) + refusals
        return Outcome(str(doc.get("status")), dict(result["context"]), errors, recorder.counts())
