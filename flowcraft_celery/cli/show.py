"""`flowcraft-celery show RUN`: a table of the run's nodes, optionally refreshing (`--watch`)."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from flowcraft_celery.cli.tables import clock, render_table, seconds
from flowcraft_celery.model.ids import printable_id
from flowcraft_celery.model.printable import printable

COLUMNS = ("NODE", "IT", "STATE", "ATTEMPTS", "WORKER", "START", "END", "DURATION", "DUE", "DETAIL")


def select_rows(view: Any, node_ref: str) -> None:
    """Keep only the rows of one node (`ask`) or of one of its executions: `ask@2.5` (passes,
    outer loop first, as the IT column shows them) or `ask@2000005` (the iteration number).
    ValueError naming the value when the run's graph has no such node or the iteration is bad."""
    if view.graph is not None:
        node_id, iteration = view.graph.execution(node_ref)
    else:  # the blueprint is not known here: the node id, or its iteration number
        node_id, _, text = node_ref.rpartition("@") if "@" in node_ref else (node_ref, "", "")
        if text and not (text.isascii() and text.isdigit()):
            raise ValueError(f"iteration {text!r}: without the run's blueprint only an iteration number is understood")
        iteration = int(text) if text else None
    view.rows = [r for r in view.rows if r.node == node_id and (iteration is None or r.iteration == iteration)]


def view_lines(view: Any, now: float) -> list[str]:
    """The header and table of a `RunView` as printed lines."""
    doc = view.doc
    created = float(doc.get("createdAt") or 0)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(view.counts().items())) or "no node started"
    lines = [f"run {printable_id(view.run_id)}  blueprint {printable_id(doc.get('blueprintId'))}  "
             f"status {printable(view.status)}",
             f"created {clock(created)}  updated {clock(float(doc.get('lastUpdated') or created))}  "
             f"nodes: {counts}"]
    for error in doc.get("errors") or []:
        lines.append(f"error at {printable_id(error.get('nodeId'))}: {printable(error.get('message'), 2000)}")
    rows = []
    for row in view.rows:
        due = f"{clock(row.due)} (in {seconds(row.due - now)})" if row.due and row.due > now else \
            (clock(row.due) if row.due else "")
        rows.append((row.node, "" if row.iteration is None else row.label or str(row.iteration), row.state,
                     "" if row.attempts is None else str(row.attempts), row.worker or "", clock(row.start),
                     clock(row.end), seconds(row.duration), due, row.detail or ""))
    return [*lines, "", *render_table(COLUMNS, rows)]


@click.command("show")
@click.argument("run_id")
@click.option("--watch", is_flag=True, help="Redraw every --interval seconds until the run ends or awaits.")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.2),
              help="Seconds between redraws with --watch.")
@click.option("--json", "as_json", is_flag=True, help="Print the run and its nodes as JSON.")
@click.option("--node", "node_ref", default=None, metavar="NODE[@ITERATION]",
              help="Only this node's executions, or one of them: e.g. ask@2.5 (passes, outer loop first, as the "
                   "IT column shows them) or ask@2000005 (the iteration number).")
def show_command(run_id: str, watch: bool, interval: float, as_json: bool, node_ref: str | None) -> None:
    """A table of RUN_ID's nodes: iteration, state, attempts, worker, start, end, duration, due time.

    IT is the loop iteration as passes, outer loop first: 2.5 is the inner loop's pass 5 in the
    outer loop's pass 2 (0 outside loops).
    States: succeeded, running, retrying, queued, sleeping, awaiting, subflow, failed, not-run.
    """
    from flowcraft_celery.distributed.client import Client
    from flowcraft_celery.distributed.ops.runview import run_view
    from flowcraft_celery.distributed.runs.errors import RunError

    runtime = Client().runtime
    while True:
        now = time.time()
        try:
            view = run_view(runtime, run_id, now)
        except RunError as exc:
            raise click.ClickException(str(exc)) from exc
        if node_ref is not None:
            try:
                select_rows(view, node_ref)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--node") from None
        if as_json:
            click.echo(json.dumps(view.to_dict(), indent=2, default=str))
        else:
            if watch:
                click.clear()
            click.echo("\n".join(view_lines(view, now)))
        if not watch or view.status not in ("running",):
            return
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            return
