"""`reconcile`: one reconcile pass now, what beat schedules every FLOWCRAFT_RECONCILE_INTERVAL seconds."""

from __future__ import annotations

import json

import click

from flowcraft_celery.cli.session import client


@click.command("reconcile")
@click.option("--stall-seconds", default=None, type=float, help="Idle time after which a running run is stalled.")
def reconcile_command(stall_seconds: float | None) -> None:
    """Re-publish the outstanding work of this deployment's stalled runs now; print the counts."""
    from flowcraft_celery.distributed.reconcile.passes import reconcile

    session = client()
    click.echo(json.dumps(reconcile(session.app, session.runtime, stall_seconds).to_dict(), indent=2))
