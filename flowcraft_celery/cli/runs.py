"""Looking at and steering runs: `status`, `runs`, `resume`, `cancel`. None of them reads blueprint files."""

from __future__ import annotations

import json
from typing import Any

import click

from flowcraft_celery.cli.errors import EXIT_FAILED, CommandError
from flowcraft_celery.cli.options import json_output_option, parse_json
from flowcraft_celery.cli.output import local_time, run_duration, status_lines
from flowcraft_celery.cli.session import client
from flowcraft_celery.cli.tables import render_table
from flowcraft_celery.model.printable import printable


def echo_json(value: Any) -> None:
    """Print a value as indented JSON."""
    click.echo(json.dumps(value, indent=2, default=str))


def run_error(exc: Exception) -> CommandError:
    """A refused run operation (unknown run, wrong state) as exit status 1."""
    return CommandError(str(exc), EXIT_FAILED)


@click.command("status")
@click.argument("run_id")
@json_output_option
def status_command(run_id: str, as_json: bool) -> None:
    """Show a run: blueprint, status, local start time, duration, what it awaits, errors.

    --json prints the status document (times as Unix epoch seconds).
    """
    from flowcraft_celery.distributed.runs.errors import RunError

    session = client()
    try:
        doc = session.status(run_id)
    except RunError as exc:
        raise run_error(exc) from None
    if as_json:
        echo_json(doc)
    else:
        from flowcraft_celery.distributed.runs.awaiting import execution_label

        click.echo("\n".join(status_lines(doc, lambda node_token: execution_label(session.runtime, doc, node_token))))


@click.command("runs")
@click.option("--status", "status", default=None,
              type=click.Choice(["running", "awaiting", "completed", "failed", "cancelled", "stalled"]))
@click.option("--limit", default=20, show_default=True, help="How many runs, newest first.")
@json_output_option
def runs_command(status: str | None, limit: int, as_json: bool) -> None:
    """List this deployment's newest runs: id, status, blueprint, local start time, duration."""
    docs = client().list_runs(status, limit)
    if as_json:
        echo_json(docs)
        return
    if not docs:
        click.echo(f"no {status + ' ' if status else ''}runs in this deployment")
        return
    rows = [(printable(str(d.get("runId"))), str(d.get("status")), printable(str(d.get("blueprintId"))),
             local_time(d.get("createdAt")), run_duration(d)) for d in docs]
    click.echo("\n".join(render_table(["RUN", "STATUS", "BLUEPRINT", "STARTED", "DURATION"], rows)))


@click.command("resume")
@click.argument("run_id")
@click.argument("action", required=False)
@click.option("--output", "output", callback=parse_json, default=None, metavar="JSON|@FILE",
              help="The waiting node's output, as JSON, or @FILE to read it from a file.")
@click.option("--node", "node_id", default=None, metavar="NODE[@ITERATION]",
              help="Which waiting node (default: the first): its id, or one iteration of it as `status` and "
                   "`show` print it, e.g. ask@2.5 (passes, outer loop first), or the iteration number, e.g. "
                   "ask@2000005.")
@json_output_option
def resume_command(run_id: str, action: str | None, output: Any, node_id: str | None, as_json: bool) -> None:
    """Continue an awaiting run: the waiting node gets OUTPUT and ACTION as its result.

    --json prints {"runId", "resumed": the execution as `show` names it, "execution": node@iteration}.
    """
    from flowcraft_celery.distributed.runs.awaiting import execution_label
    from flowcraft_celery.distributed.runs.errors import RunError

    session = client()
    try:
        resumed = session.resume(run_id, action, output, node_id)
        shown = execution_label(session.runtime, session.status(run_id), resumed)
    except RunError as exc:
        raise run_error(exc) from None
    if as_json:
        echo_json({"runId": run_id, "resumed": shown, "execution": resumed})
    else:
        click.echo(f"resumed {printable(run_id)} at {printable(shown)}")


@click.command("cancel")
@click.argument("run_id")
@json_output_option
def cancel_command(run_id: str, as_json: bool) -> None:
    """Cancel a run; nothing of it starts afterwards.

    --json prints {"runId", "cancelled": false when the run had already ended}.
    """
    from flowcraft_celery.distributed.runs.errors import RunError

    try:
        cancelled = client().cancel(run_id)
    except RunError as exc:
        raise run_error(exc) from None
    if as_json:
        echo_json({"runId": run_id, "cancelled": cancelled})
    else:
        click.echo(f"cancelled {printable(run_id)}" if cancelled else f"{printable(run_id)} had already ended")
