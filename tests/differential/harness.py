"""Running a generated case on the local runner and on Celery workers, and judging the traces.

A *trace* is what one run did: its final status, final context and errors, and how many times
each node execution was invoked, as `{"<blueprint>/<node>@<iteration>": invocations}` (retries
included; a subflow's child runs are counted under the child blueprint's id). Invocations are
recorded by the `diff-behave` node itself (`record_hit`): in a Redis hash per case on workers,
in a dict in process for the local runner.

Two judgements:
- `differences(local, celery)`: the traces must be identical (executions and attempt counts,
  status, final context minus the case's volatile keys, the nodes named by errors);
- `violations(case, trace)`: the trace against the oracle's expectation (generator.Oracle),
  which knows only the blueprint: no execution whose incoming edges were all skipped runs, a
  `completed` run left no reachable node unrun, each execution runs exactly once with the
  expected number of attempts, the status is the expected one.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowcraft_celery.devtools.behaviours import build
from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.registry import NodeResult, Registry
from flowcraft_celery.model.blueprint import Blueprint
from tests.differential.generator import BEHAVE, Case

#: Output a `wait` node is resumed with.
RESUMED = "resumed"
#: Resumes applied at most (a case never needs this many).
MAX_RESUMES = 40

Hit = Callable[[str, str], None]


def trace_field(ctx: NodeContext) -> str:
    """The trace entry of one invocation: `<blueprint>/<node>@<iteration>`."""
    return f"{ctx.blueprint_id}/{ctx.node_id}@{ctx.iteration}"


def behave(hit: Hit) -> Callable[[NodeContext], NodeResult]:
    """The `diff-behave` node: count the invocation under its case, then do `params.b` (SPEC §10)."""

    def node(ctx: NodeContext) -> NodeResult:
        hit(str(ctx.params["case"]), trace_field(ctx))
        return build(ctx.params["b"], f"{ctx.node_id}.params.b")(ctx)

    return node


@dataclass
class Trace:
    """What one run did."""

    status: str
    context: dict[str, Any]
    errors: list[dict[str, Any]]
    hits: dict[str, int]
    resumes: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "hits": dict(sorted(self.hits.items())), "resumes": self.resumes,
                "errors": self.errors, "context": dict(sorted(self.context.items()))}


# -- the local runner --------------------------------------------------------------------------


@dataclass
class MemoryHits:
    """Invocation counts per case, in this process."""

    hits: dict[str, Counter[str]] = field(default_factory=dict)

    def hit(self, case: str, entry: str) -> None:
        self.hits.setdefault(case, Counter())[entry] += 1


def run_local(case: Case) -> Trace:
    """Run the case on the in-process local runner, resuming each time it awaits."""
    from flowcraft_celery.local.runner import LocalRunner

    started = time.monotonic()
    hits = MemoryHits()
    registry = Registry()
    registry.register(BEHAVE, behave(hits.hit))
    blueprints = {k: Blueprint.from_dict(v) for k, v in case.blueprints.items()}
    runner = LocalRunner(registry, blueprints)
    result = runner.run(blueprints[case.start])
    resumes = 0
    while result.status == "awaiting" and resumes < MAX_RESUMES:
        result = runner.resume(result.run_id, None, RESUMED)
        resumes += 1
    return Trace(result.status, dict(result.context), list(result.errors), dict(hits.hits.get(case.name, {})),
                 resumes, time.monotonic() - started)


# -- Celery workers ----------------------------------------------------------------------------


def write_blueprints(cases: Iterable[Case], folder: Path) -> None:
    """Every blueprint of the cases as `<id>.json` in `folder` (the workers' FLOWCRAFT_BLUEPRINTS)."""
    folder.mkdir(parents=True, exist_ok=True)
    for case in cases:
        for blueprint_id, document in case.blueprints.items():
            (folder / f"{blueprint_id}.json").write_text(json.dumps(document, indent=1), encoding="utf-8")


def hits_key(case: str) -> str:
    """The Redis hash of a case's invocations on workers (under FLOWCRAFT_DIFF_TRACE_KEY)."""
    return f"{os.environ.get('FLOWCRAFT_DIFF_TRACE_KEY', 'flowcraft:diff')}:{case}"


def run_celery(cases: list[Case], client: Any, redis_client: Any, parallel: int = 6,
               timeout: float = 120.0) -> dict[str, Trace]:
    """Run the cases on the workers `client` talks to, `parallel` at a time, resuming each run
    each time it awaits; a run still going after `timeout` s is reported with status `timeout`."""
    from flowcraft_celery.stores.base import FINAL_STATES

    traces: dict[str, Trace] = {}
    queue = list(cases)
    live: dict[str, tuple[Case, str, float, int]] = {}
    while queue or live:
        while queue and len(live) < parallel:
            case = queue.pop(0)
            try:
                run = client.start(case.start)
            except Exception as exc:  # a refused start is the trace: local ran it, so they differ
                traces[case.name] = Trace(f"start-refused: {exc}", {}, [], {})
                continue
            live[case.name] = (case, run.run_id, time.monotonic(), 0)
        time.sleep(0.2)
        for name, (case, run_id, started, resumes) in list(live.items()):
            doc = client.status(run_id)
            status = str(doc.get("status"))
            if status == "awaiting" and resumes < MAX_RESUMES:
                try:
                    client.resume(run_id, None, RESUMED)
                except Exception as exc:  # a refused resume is part of the trace
                    traces[name] = _celery_trace(client, redis_client, case, run_id, "resume-refused",
                                                 [{"message": str(exc)}], resumes, started)
                    del live[name]
                    continue
                live[name] = (case, run_id, started, resumes + 1)
            elif status in FINAL_STATES or status == "awaiting":
                traces[name] = _celery_trace(client, redis_client, case, run_id, status,
                                             list(doc.get("errors") or []), resumes, started)
                del live[name]
            elif time.monotonic() - started > timeout:
                traces[name] = _celery_trace(client, redis_client, case, run_id, f"timeout ({status})",
                                             list(doc.get("errors") or []), resumes, started)
                del live[name]
    return traces


def _celery_trace(client: Any, redis_client: Any, case: Case, run_id: str, status: str,
                  errors: list[dict[str, Any]], resumes: int, started: float) -> Trace:
    result = client.result(run_id)
    raw: dict[bytes, bytes] = redis_client.hgetall(hits_key(case.name))
    hits = {k.decode(): int(v) for k, v in raw.items()}
    return Trace(status, dict(result.get("context") or {}), errors or list(result.get("errors") or []), hits,
                 resumes, time.monotonic() - started)


# -- judging -----------------------------------------------------------------------------------


def _context(trace: Trace, volatile: Iterable[str]) -> dict[str, Any]:
    skip = set(volatile)
    return {k: v for k, v in trace.context.items() if k not in skip}


def _error_nodes(trace: Trace) -> list[str]:
    return sorted(str(e.get("nodeId")) for e in trace.errors)


def differences(case: Case, local: Trace, celery: Trace) -> list[str]:
    """Every way the two runners' traces differ (empty: identical)."""
    out: list[str] = []
    if local.status != celery.status:
        out.append(f"status: local {local.status!r}, celery {celery.status!r}")
    for entry in sorted({*local.hits, *celery.hits}):
        a, b = local.hits.get(entry, 0), celery.hits.get(entry, 0)
        if a != b:
            out.append(f"{entry}: invoked {a}x locally, {b}x on celery")
    lctx, cctx = _context(local, case.volatile), _context(celery, case.volatile)
    for key in sorted({*lctx, *cctx}):
        if lctx.get(key, "<absent>") != cctx.get(key, "<absent>"):
            out.append(f"context[{key!r}]: local {lctx.get(key, '<absent>')!r}, celery {cctx.get(key, '<absent>')!r}")
    if _error_nodes(local) != _error_nodes(celery):
        out.append(f"errors name nodes {_error_nodes(local)} locally, {_error_nodes(celery)} on celery")
    return out


def executions(trace: Trace) -> dict[str, list[int]]:
    """Per `blueprint/node`, the invocations of each execution (iterations in order); a child
    blueprint's runs are summed (every child run is iteration 0 of its own run)."""
    grouped: dict[str, list[tuple[int, int]]] = {}
    for entry, count in trace.hits.items():
        node, _, iteration = entry.rpartition("@")
        grouped.setdefault(node, []).append((int(iteration), count))
    return {node: [c for _, c in sorted(items)] for node, items in grouped.items()}


def violations(case: Case, trace: Trace) -> list[str]:
    """The trace against the oracle: invariants computed from the blueprint alone."""
    out: list[str] = []
    if trace.status != case.status:
        detail = "; ".join(str(e.get("message", ""))[:200] for e in trace.errors)
        out.append(f"status {trace.status!r}, expected {case.status!r}" + (f" ({detail})" if detail else ""))
    actual = executions(trace)
    children = {k for k in case.blueprints if k != case.start}
    expected = {k: ([sum(v)] if k.split("/")[0] in children else v) for k, v in case.executions.items()}
    for node in sorted({*actual, *expected}):
        got, want = actual.get(node, []), expected.get(node, [])
        if len(got) > len(want):
            out.append(f"{node} ran {len(got)} executions, expected {len(want)}: an execution whose incoming "
                       "edges were all skipped (or an extra pass) ran")
        elif len(got) < len(want) and trace.status == "completed":
            out.append(f"{node} ran {len(got)} executions, expected {len(want)}: run completed with a reachable "
                       "execution left unrun")
        elif len(got) == len(want) and sorted(got) != sorted(want):
            out.append(f"{node} attempts per execution {got}, expected {want} (each execution runs exactly once, "
                       "retries included)")
    if trace.resumes != case.waits and trace.status == case.status:
        out.append(f"resumed {trace.resumes} times, expected {case.waits} waits")
    return out


@dataclass
class Verdict:
    """One case's outcome on both runners."""

    case: Case
    local: Trace
    celery: Trace | None
    problems: dict[str, list[str]]

    @property
    def failed(self) -> bool:
        return any(self.problems.values())

    def to_json(self, seed: int | None = None) -> dict[str, Any]:
        return {"seed": seed, "case": self.case.to_json(), "problems": self.problems,
                "local": self.local.to_json(), "celery": self.celery.to_json() if self.celery else None}


def judge(case: Case, local: Trace, celery: Trace | None) -> Verdict:
    """Both judgements of one case."""
    problems = {"local-vs-oracle": violations(case, local)}
    if celery is not None:
        problems["celery-vs-oracle"] = violations(case, celery)
        problems["local-vs-celery"] = differences(case, local, celery)
    return Verdict(case, local, celery, problems)
