"""`flowcraft-celery purge`: remove finished runs older than an age from Cosmos DB and Redis."""

from __future__ import annotations

import json
import time

import click

from flowcraft_celery.cli.options import json_output_option
from flowcraft_celery.model.durations import parse_duration


def _duration(_: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """Parse `--older-than`, naming the option and the accepted forms on error."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from exc


def _age(seconds: float) -> str:
    """A duration as its largest whole unit (`7d`, `12h`, `90s`)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@click.command("purge")
@click.option("--older-than", "older_than", callback=_duration, default=None, metavar="DURATION",
              help="Remove runs that ended more than DURATION ago: 30m, 12h, 7d "
                   "(default: FLOWCRAFT_RETENTION_DAYS).")
@click.option("--dry-run", is_flag=True, help="Only count what would be removed.")
@json_output_option
def purge_command(older_than: float | None, dry_run: bool, as_json: bool) -> None:
    """Remove completed, failed and cancelled runs older than DURATION from every store.

    Deletes each run's status item, context and output items (Cosmos DB) and ledger, join and
    claim keys (Redis). On Azure, Cosmos DB's TTL already removes runs after the retention; use
    this on the emulator (which has no TTL), for runs a crash left without expiry, or to clean up
    sooner. Running, awaiting and sleeping runs are never removed, nor are other deployments'
    runs (a deployment is FLOWCRAFT_QUEUE_PREFIX + FLOWCRAFT_DEFAULT_QUEUE).

    --json prints {"dryRun", "cutoff" (epoch seconds), "olderThanSeconds", "runs" by status,
    "removed": {"statusItems", "contextItems", "redisKeys"}} (what would be removed, in a dry run).
    """
    from flowcraft_celery.distributed.client import Client
    from flowcraft_celery.distributed.runs.retention import purge

    rt = Client().runtime
    if older_than is None:
        if rt.settings.retention_seconds <= 0:
            raise click.UsageError("FLOWCRAFT_RETENTION_DAYS is 0 (runs are kept for ever): give --older-than")
        older_than = rt.settings.retention_seconds
    report = purge(rt, older_than, dry_run=dry_run)
    if as_json:
        removed = report.removed
        click.echo(json.dumps({"dryRun": dry_run, "cutoff": report.cutoff, "olderThanSeconds": older_than,
                               "runs": dict(sorted(report.runs.items())),
                               "removed": {"statusItems": removed.status_items, "contextItems": removed.context_items,
                                           "redisKeys": removed.redis_keys}}, indent=2))
        return
    cutoff = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(report.cutoff))
    total = sum(report.runs.values())
    scope = f"finished run(s) last updated before {cutoff} (older than {_age(older_than)})"
    if not total:
        click.echo(f"no {scope}: nothing to purge")
        return
    statuses = ", ".join(f"{status} {count}" for status, count in sorted(report.runs.items()))
    removed = report.removed
    items = (f"{removed.status_items} status item(s), {removed.context_items} context and output item(s), "
             f"{removed.redis_keys} Redis key(s)")
    if dry_run:
        click.echo(f"dry run: would purge {total} {scope}: {statuses}")
        click.echo(f"  would remove {items}")
    else:
        click.echo(f"purged {total} {scope}: {statuses}")
        click.echo(f"  removed {items}")
