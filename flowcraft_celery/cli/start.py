"""`start`: start a run on the workers, and with `--wait` follow it to its end."""

from __future__ import annotations

import sys
from typing import Any

import click

from flowcraft_celery.cli.errors import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    CommandError,
    as_command_error,
)
from flowcraft_celery.cli.options import context_option
from flowcraft_celery.cli.progress import Progress, run_state, user_context
from flowcraft_celery.cli.runs import echo_json
from flowcraft_celery.cli.session import client

#: After this long with no node finished and the run untouched, `--wait` says no worker took it
#: (an idle worker polls its queue only every 8 s); sooner when the catalog lists no worker at all.
NO_WORKER_HINT_SECONDS = 15.0
NO_WORKER_LISTED_HINT_SECONDS = 4.0
def not_started(exc: Exception) -> CommandError:
    """A start that failed on a service or setting: as the error wrapper says it, else in the endpoint's words."""
    explained = as_command_error(exc)
    if explained.exit_code in (EXIT_CONFIG, EXIT_UNREACHABLE):
        return CommandError(f"run not started: {explained.message}", explained.exit_code)
    message = str(exc)
    if "broker" in message:
        message += ("; check AZURE_STORAGE_CONNECTION_STRING (or CELERY_BROKER_URL) and that Azure Storage answers "
                    "(`flowcraft-celery services status` for the dev services)")
    return CommandError(message, EXIT_UNREACHABLE)


def no_worker_hint(session: Any, elapsed: float, listed: bool) -> str:
    """What to say when no worker has taken up a new run."""
    from flowcraft_celery.distributed.core.shards import shard_names
    from flowcraft_celery.settings import Settings

    settings = Settings.from_conf(session.app.conf)
    queues = ",".join((*shard_names(settings.default_queue, settings.queue_shards), settings.reconcile_queue_name))
    why = "no worker of deployment {!r} is running (none is listed by `flowcraft-celery blueprints`)" if not listed \
        else "the workers of deployment {!r} have not taken it up"
    return (f"waiting {elapsed:.0f} s: " + why.format(settings.deployment) +
            f"; start one with `celery -A flowcraft_celery worker -Q {queues}` and the same settings")


@click.command("start")
@click.argument("blueprint_id")
@context_option
@click.option("--wait", "wait", is_flag=True, help="Show progress and wait until the run ends or awaits.")
@click.option("--timeout", default=None, type=float, help="With --wait: give up after this many seconds (exit 5).")
@click.option("--all-keys", is_flag=True, help="With --wait: print the internal `_outputs.*` keys of the context too.")
@click.option("--run-id", "run_id", default=None,
              help="Your own run id; starting the same id again starts nothing new and prints it again.")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"runId": ...} as JSON (with --wait the result is JSON anyway).')
def start_command(blueprint_id: str, context: dict[str, Any], wait: bool, timeout: float | None,
                  all_keys: bool, run_id: str | None, as_json: bool) -> None:
    """Start a run of BLUEPRINT_ID on the Celery workers; print its run id (or its result with --wait).

    The blueprint comes from the catalog the workers published (`flowcraft-celery blueprints`).
    All or nothing: when a service cannot be reached, it fails naming the endpoint and the run
    never executes.
    """
    from flowcraft_celery.distributed.runs.errors import RunError, StartError
    from flowcraft_celery.model.catalog import CatalogError

    session = client()
    try:
        run = session.start(blueprint_id, context, run_id)
    except StartError as exc:
        raise not_started(exc) from exc
    except CatalogError:
        raise  # a blueprint source of the settings: a configuration problem (exit 3, naming the setting)
    except (RunError, ValueError) as exc:  # unknown or invalid blueprint, bad id or values; or a setting
        explained = as_command_error(exc)
        if explained.exit_code in (EXIT_CONFIG, EXIT_UNREACHABLE):
            raise explained from exc
        raise CommandError(str(exc), EXIT_FAILED) from None
    if not wait:
        if as_json:
            echo_json({"runId": run.run_id})
        else:
            click.echo(run.run_id)
        return
    progress = Progress(sys.stderr)
    progress.note(f"run {run.run_id}")
    hinted = False

    def on_poll(doc: Any) -> None:
        nonlocal hinted
        progress.show(run_state(session.runtime, run.run_id, doc))
        elapsed = progress.elapsed
        untouched = doc.get("lastUpdated") == doc.get("createdAt") and session.progress(run.run_id) == 0
        if hinted or not untouched or elapsed < NO_WORKER_LISTED_HINT_SECONDS:
            return
        listed = bool(session.workers())
        if not listed or elapsed >= NO_WORKER_HINT_SECONDS:
            hinted = True
            progress.note(no_worker_hint(session, elapsed, listed))

    try:
        doc = run.wait(timeout, on_poll=on_poll)
    except TimeoutError as exc:
        progress.close()
        raise CommandError(f"{exc}; it goes on: `flowcraft-celery status {run.run_id}`", EXIT_TIMEOUT) from None
    progress.close()
    result = session.result(run.run_id)
    echo_json(result if all_keys else {**result, "context": user_context(result.get("context"))})
    sys.exit(EXIT_FAILED if doc.get("status") == "failed" else 0)
