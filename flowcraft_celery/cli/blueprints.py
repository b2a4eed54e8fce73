"""`blueprints`: the catalog the deployment's workers published (clients need no blueprint files)."""

from __future__ import annotations

import json

import click

from flowcraft_celery.cli.options import json_output_option
from flowcraft_celery.cli.output import local_time
from flowcraft_celery.cli.session import client
from flowcraft_celery.cli.tables import render_table


@click.command("blueprints")
@json_output_option
def blueprints_command(as_json: bool) -> None:
    """List the blueprints and node implementations this deployment's workers published when they started."""
    from flowcraft_celery.settings import Settings

    session = client()
    deployment = Settings.from_conf(session.app.conf).deployment
    published, workers = session.blueprints(), session.workers()
    if as_json:
        click.echo(json.dumps({"deployment": deployment, "blueprints": published, "workers": workers}, indent=2))
        return
    if not published and not workers:
        click.echo(f"no worker of deployment {deployment!r} has published a catalog: start one with "
                   "`celery -A flowcraft_celery worker` and the same settings (FLOWCRAFT_QUEUE_PREFIX, "
                   "FLOWCRAFT_DEFAULT_QUEUE, REDIS_URL)")
        return
    click.echo(f"deployment {deployment!r}")
    rows = [(str(e["id"]), str(e.get("version") or "-"), str(e.get("fingerprint")), ", ".join(e.get("uses") or []),
             local_time(e.get("publishedAt")), str(e.get("worker"))) for _, e in sorted(published.items())]
    click.echo("\n".join(render_table(["BLUEPRINT", "VERSION", "FINGERPRINT", "USES", "PUBLISHED", "BY"], rows)))
    if workers:
        click.echo("")
        worker_rows = [(name, ", ".join(w.get("queues") or []), local_time(w.get("startedAt")),
                 ", ".join(n for n in w.get("nodes") or [] if not _builtin(n)) or "(built-ins only)")
                for name, w in sorted(workers.items())]
        click.echo("\n".join(render_table(["WORKER", "QUEUES", "STARTED", "NODE IMPLEMENTATIONS"], worker_rows)))


def _builtin(uses: str) -> bool:
    from flowcraft_celery.model.validation import BUILTIN_USES

    return uses in BUILTIN_USES
