"""A run's story as an operator reads it: every node with its state, attempts, worker and times.

Built from what the run already keeps: its status document (one Cosmos point read), and in
Redis its ledger (pending, finished with finish times, awaiting, dynamic nodes) and its
timeline of attempts (`stores/timeline.py`). `flowcraft-celery show` prints it as a table,
`flowcraft-celery graph --run` colours the diagram with it, and `start --wait` counts it.

Node states: `succeeded`; `running` (an attempt started on a worker; a node that killed its
worker process says how often); `retrying` (an attempt
failed, the next one is due); `queued` (its message waits in a queue or a worker's prefetch);
`sleeping` (a sleep node, due at its wake time); `awaiting` (a wait node, until resumed);
`subflow` (waiting for its child run); `failed` (for good, or with a fallback node taking over,
or after crashing its worker process too often);
`not-run` (not reached, or skipped).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from flowcraft_celery.distributed.core.message import NodeMessage
from flowcraft_celery.distributed.core.runtime import Runtime
from flowcraft_celery.distributed.runs.errors import RunError
from flowcraft_celery.distributed.runs.graphs import run_graph
from flowcraft_celery.model.graph import Graph
from flowcraft_celery.stores.base import FINAL_STATES, RunStatusDoc

#: States of a node that are still to come to an end, and the order `show` lists states in.
LIVE_STATES = ("running", "retrying", "queued", "sleeping", "awaiting", "subflow")


@dataclass
class NodeRow:
    """One node execution (node and loop iteration), or a node that never ran."""

    node: str
    iteration: int | None
    uses: str
    state: str
    attempts: int | None = None
    worker: str | None = None
    start: float | None = None
    end: float | None = None
    due: float | None = None
    detail: str | None = None
    #: The iteration as people read it: its passes, outer loop first (`2.5`); None for not-run.
    label: str | None = None
    #: Times the node killed the worker process running it (None: never).
    crashes: int | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from the start of the last attempt to the end, when both are known."""
        if self.start is None or self.end is None:
            return None
        return max(0.0, self.end - self.start)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (`show --json`)."""
        return {**asdict(self), "duration": self.duration}


@dataclass
class RunView:
    """The run's status document and one row per node execution."""

    run_id: str
    doc: RunStatusDoc
    graph: Graph | None
    rows: list[NodeRow] = field(default_factory=list)

    @property
    def status(self) -> str:
        """The run's status."""
        return str(self.doc.get("status"))

    def node_states(self) -> dict[str, str]:
        """Node id -> the state of its latest iteration (for colouring a diagram)."""
        states: dict[str, str] = {}
        latest: dict[str, int] = {}
        for row in self.rows:
            iteration = -1 if row.iteration is None else row.iteration
            if row.node not in latest or iteration >= latest[row.node]:
                latest[row.node] = iteration
                states[row.node] = row.state
        return states

    def counts(self) -> dict[str, int]:
        """How many node executions are in each state."""
        counts: dict[str, int] = {}
        for row in self.rows:
            if row.iteration is not None:
                counts[row.state] = counts.get(row.state, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        """JSON form (`show --json`)."""
        return {"runId": self.run_id, "status": self.status, "blueprintId": self.doc.get("blueprintId"),
                "createdAt": self.doc.get("createdAt"), "lastUpdated": self.doc.get("lastUpdated"),
                "errors": self.doc.get("errors") or [], "nodes": [r.to_dict() for r in self.rows]}


def _split(node_token: str) -> tuple[str, int]:
    node, _, iteration = node_token.rpartition("@")
    return node, int(iteration or 0)


def run_view(rt: Runtime, run_id: str, now: float | None = None, doc: RunStatusDoc | None = None) -> RunView:
    """Everything `show` prints about `run_id` (RunError if there is no such run); `doc` is the
    status document when the caller has just read it."""
    doc = doc if doc is not None else rt.statuses.get(run_id)
    if doc is None:
        raise RunError(f"no run {run_id!r}")
    now = time.time() if now is None else now
    blueprint = rt.blueprints.get(str(doc.get("blueprintId")))
    graph = run_graph(rt, blueprint, run_id, True) if blueprint is not None else None
    pending = {name: NodeMessage.from_wire(entry) for name, entry in rt.ledger.pending(run_id).items()}
    awaiting = set(rt.ledger.awaiting(run_id))
    finished = dict(rt.ledger.finish_times(run_id))
    attempts = rt.timeline.entries(run_id)
    errors = [e for e in doc.get("errors") or [] if isinstance(e, dict)]
    failed_nodes = {str(e.get("nodeId")) for e in errors}
    crashed = {str(e.get("nodeId")): int(e.get("crashes") or 0) for e in errors if e.get("type") == "NodeCrashed"}
    unended = rt.ledger.unended_attempts(run_id)
    final = doc.get("status") in FINAL_STATES
    rows: list[NodeRow] = []
    for node_token in sorted({*finished, *pending, *attempts, *awaiting}):
        node, iteration = _split(node_token)
        uses = graph.nodes[node].uses if graph is not None and node in graph.nodes else "?"
        entry = attempts.get(node_token, {})
        message = pending.get(node_token)
        row = NodeRow(node, iteration, str(entry.get("uses") or uses), "queued",
                      attempts=entry.get("attempt") or (message.attempt if message else None),
                      worker=entry.get("worker"),
                      start=entry.get("start"), end=entry.get("end"),
                      label=graph.iteration_label(node, iteration) if graph is not None and node in graph.nodes
                      else str(iteration))
        state = entry.get("state")
        killed_run = node in crashed and node_token not in finished
        if killed_run:
            row.crashes = crashed[node]
        else:  # attempts that started and never ended died with their process; a running one has not (yet)
            row.crashes = max(0, unended.get(node_token, 0) - (1 if state == "running" else 0)) or None
        if killed_run:
            row.state, row.detail = "failed", f"crashed its worker process {row.crashes} times"
        elif node_token in finished and state == "failed":
            row.state, row.end, row.detail = "failed", finished[node_token], "its fallback took over"
        elif node_token in finished:
            row.state, row.end = "succeeded", finished[node_token]
        elif node_token in awaiting:
            row.state = "awaiting"
        elif message is not None and message.child_run:
            row.state, row.detail = "subflow", f"child run {message.child_run}"
        elif message is not None and message.wake_at and message.wake_at > now:
            row.state, row.due = "sleeping", message.wake_at
        elif state == "failed" or (node in failed_nodes and node_token not in pending):
            row.state = "failed"
        elif state == "retrying":
            row.state, row.due = "retrying", entry.get("due")
        elif state == "running":
            row.state = "running"
        if row.crashes and row.state in LIVE_STATES:
            row.detail = f"crashed its worker process {row.crashes} time(s) so far"
        if final and row.state in LIVE_STATES:
            row.detail = f"{row.state} when the run became {doc.get('status')}"
            if doc.get("status") == "cancelled":
                row.state = "cancelled"
        rows.append(row)
    rows.sort(key=lambda r: (r.start or r.end or float("inf"), r.node, r.iteration or 0))
    if graph is not None:
        seen = {r.node for r in rows}
        rows += [NodeRow(n, None, d.uses, "not-run") for n, d in graph.nodes.items() if n not in seen]
    return RunView(run_id, doc, graph, rows)
