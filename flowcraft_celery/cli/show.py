"""`flowcraft-celery show RUN`: a table of the run's nodes, optionally refreshing (`--watch`)."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from flowcraft_celery.cli.tables import clock, render_table, seconds

COLUMNS = ("NODE", "IT", "STATE", "ATTEMPTS", "WORKER", "START", "END", "DURATION", "DUE", "DETAIL")


def view_lines(view: Any, now: float) -> list[str]:
    """The header and table of a `RunView` as printed lines."""
    doc = view.doc
    created = float(doc.get("createdAt") or 0)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(view.counts().items())) or "no node started"
    lines = [f"run {view.run_id}  blueprint {doc.get('blueprintId')}  status {view.status}",
             f"created {clock(created)}  updated {clock(float(doc.get('lastUpdated') or created))}  "
             f"nodes: {counts}"]
    for error in doc.get("errors") or []:
        lines.append(f"error at {error.get('nodeId')}: {error.get('message')}")
    rows = []
    for row in view.rows:
        due = f"{clock(row.due)} (in {seconds(row.due - now)})" if row.due and row.due > now else \
            (clock(row.due) if row.due else "")
        rows.append((row.node, "" if row.iteration is None else str(row.iteration), row.state,
                     "" if row.attempts is None else str(row.attempts), row.worker or "", clock(row.start),
                     clock(row.end), seconds(row.duration), due, row.detail or ""))
    return [*lines, "", *render_table(COLUMNS, rows)]


@click.command("show")
@click.argument("run_id")
@click.option("--watch", is_flag=True, help="Redraw every --interval seconds until the run ends or awaits.")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.2),
              help="Seconds between redraws with --watch.")
@click.option("--json", "as_json", is_flag=True, help="Print the run and its nodes as JSON.")
def show_command(run_id: str, watch: bool, interval: float, as_json: bool) -> None:
    """A table of RUN_ID's nodes: iteration, state, attempts, worker, start, end, duration, due time.

    States: succeeded, running, retrying, queued, sleeping, awaiting, subflow, failed, not-run.
    """
    from flowcraft_celery.distributed.client import Client
    from flowcraft_celery.distributed.runs import RunError
    from flowcraft_celery.distributed.runview import run_view

    runtime = Client().runtime
    while True:
        now = time.time()
        try:
            view = run_view(runtime, run_id, now)
        except RunError as exc:
            raise click.ClickException(str(exc)) from exc
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
