"""`flowcraft-celery queues` and `flowcraft-celery dlq show|requeue|purge QUEUE`."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from flowcraft_celery.cli.tables import clock, render_table, seconds
from flowcraft_celery.model.ids import printable_id
from flowcraft_celery.model.printable import printable


def _app() -> Any:
    from flowcraft_celery.distributed.app import app

    return app


def _admin(app: Any) -> Any:
    from flowcraft_celery.cli.errors import EXIT_CONFIG, as_command_error
    from flowcraft_celery.distributed.ops.queues import NotAzureQueueBroker, queue_admin

    try:
        admin = queue_admin(app)
    except NotAzureQueueBroker as exc:
        raise click.ClickException(str(exc)) from exc
    except ValueError as exc:  # a storage setting that does not parse: named when we know it
        explained = as_command_error(exc)
        raise explained if explained.exit_code == EXIT_CONFIG else click.ClickException(str(exc)) from exc
    _refused_at_once()
    return admin


def _known(admin: Any, queue: str) -> Any:
    """`admin`, when QUEUE (or its dead-letter queue) exists under the deployment's prefix; else a
    one-line error (exit 1) listing the queues that do."""
    from flowcraft_celery.cli.errors import EXIT_FAILED, CommandError

    dlq = admin.dead_letter_queue(queue)
    source = dlq[: -len("-dlq")]
    if admin.count(dlq) is not None or admin.count(source) is not None:
        return admin
    known = ", ".join(q.name for q in admin.queues(with_counts=False, kinds=("tasks",))) or "none"
    raise CommandError(f"no queue {printable(queue)!r} in this deployment (prefix {admin.prefix!r}; its task "
                       f"queues: {known}; see `flowcraft-celery queues`)", EXIT_FAILED)


def _refused_at_once(timeout: float = 3.0) -> None:
    """Fail at once when the storage endpoint of AZURE_STORAGE_CONNECTION_STRING refuses connections:
    the Azure SDK would retry for about 85 s before saying so."""
    import os
    import socket
    from urllib.parse import urlparse

    from flowcraft_celery.distributed.core.problems import STORAGE_ENV, ServiceUnreachable

    parts = dict(p.split("=", 1) for p in os.environ.get(STORAGE_ENV, "").split(";") if "=" in p)
    endpoint = parts.get("QueueEndpoint") or ""
    url = urlparse(endpoint)
    if not url.hostname:
        return  # an Azure account (its own host name), or the account URL is in CELERY_BROKER_URL
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except ConnectionRefusedError as exc:
        raise ServiceUnreachable("Azure Storage", endpoint, STORAGE_ENV, "connection refused",
                                 f"start it (`flowcraft-celery services up`) or fix the endpoint in {STORAGE_ENV}"
                                 ) from exc
    except OSError:
        return  # slow or unknown: the SDK's own retries and message apply


@click.command("queues")
@click.option("--delayed", "show_delayed", is_flag=True, help="Also list each delayed task with its due time.")
@click.option("--all", "show_all", is_flag=True, help="Also Celery's control (pidbox, reply) and event queues.")
@click.option("--json", "as_json", is_flag=True, help="Print the queues as JSON.")
def queues_command(show_delayed: bool, show_all: bool, as_json: bool) -> None:
    """The task and dead-letter queues of the deployment (its prefix) with their message counts.

    MESSAGES is Azure's approximate count of a queue; DELAYED of those wait for their due time (a
    countdown, retry or sleep); VISIBLE are the rest: ready, or held by a worker right now.
    """
    from flowcraft_celery.distributed.ops.queues import queue_rows
    from flowcraft_celery.distributed.runs.delayed import index_for

    app = _app()
    admin = _admin(app)
    now = time.time()
    rows = queue_rows(app, admin, now, None if show_all else ("tasks", "dead-letter"))
    index = index_for(app.conf)
    delayed = {r.info.name: index.tasks(r.info.name, now) for r in rows if show_delayed and r.delayed}
    if as_json:
        click.echo(json.dumps({"prefix": admin.prefix, "queues": [
            {**r.to_dict(), **({"delayedTasks": [vars(t) for t in delayed.get(r.info.name, [])]}
                               if show_delayed else {})} for r in rows]}, indent=2))
        return
    click.echo(f"queue prefix {admin.prefix!r}: {len(rows)} queue(s)")
    table = [(r.info.name, r.info.kind, _n(r.info.messages), _n(r.visible), str(r.delayed) if r.info.kind == "tasks"
              else "", r.info.azure_name) for r in rows]
    for line in render_table(("QUEUE", "KIND", "MESSAGES", "VISIBLE", "DELAYED", "AZURE QUEUE"), table):
        click.echo(line)
    for name, tasks in delayed.items():
        click.echo(f"\ndelayed in {printable(name)}:")
        for line in render_table(("DUE", "IN", "TASK", "TASK ID"),
                                 [(clock(t.due), seconds(t.due - now), t.task, t.task_id) for t in tasks]):
            click.echo(f"  {line}")


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


@click.group("dlq")
def dlq_group() -> None:
    """Look at, re-drive or delete the dead letters of a queue (QUEUE or QUEUE-dlq).

    A message is dead-lettered when its body cannot be decoded, when it was delivered more than
    max_delivery_count times, or when its task rejected it.
    """


@dlq_group.command("show")
@click.argument("queue")
@click.option("--limit", default=32, show_default=True, type=click.IntRange(1, 32),
              help="How many messages (Azure shows at most the first 32).")
@click.option("--json", "as_json", is_flag=True, help="Print the messages as JSON.")
def dlq_show(queue: str, limit: int, as_json: bool) -> None:
    """The first dead letters of QUEUE: why each was moved, its task, and for a node task its run."""
    admin = _known(_admin(_app()), queue)
    letters = admin.dead_letters(queue, limit)
    total = admin.count(admin.dead_letter_queue(queue))
    if as_json:
        click.echo(json.dumps({"deadLetterQueue": admin.dead_letter_queue(queue), "messages": total,
                               "shown": [d.to_dict() for d in letters]}, indent=2, default=str))
        return
    click.echo(f"{printable(admin.dead_letter_queue(queue))}: {total or 0} message(s), showing {len(letters)}")
    for letter in letters:
        click.echo(f"\n{printable(letter.message_id)}  dead-lettered {clock(letter.inserted_on)}  "
                   f"from {printable(letter.queue)}  after {printable(letter.deliveries or '?', 20)} deliveries")
        click.echo(f"  reason: {printable(letter.reason, 500)}")
        if letter.task:
            click.echo(f"  task:   {printable(letter.task)}[{printable(letter.task_id)}]")
        node = _node_of(letter.kwargs)
        if node:
            click.echo(f"  node:   {node}")
        if letter.stored_body:
            click.echo(f"  body:   stored out of line in blob {printable(letter.stored_body)}")
        elif letter.raw is not None:
            click.echo(f"  body:   {printable(repr(letter.raw[:200]), 300)}")
        elif letter.kwargs or letter.args:
            click.echo(f"  args:   {printable(json.dumps(letter.args, default=str), 300)}  "
                       f"kwargs: {printable(json.dumps(letter.kwargs, default=str), 300)}")


def _node_of(kwargs: Any) -> str | None:
    """`run <id> node <node>@<it>` of a node task's kwargs (several for a packed message)."""
    if not isinstance(kwargs, dict):
        return None
    members = [kwargs["msg"]] if isinstance(kwargs.get("msg"), dict) else kwargs.get("msgs")
    if not isinstance(members, list):
        return None
    payloads = [m for m in members if isinstance(m, dict) and m.get("run") and m.get("node")]
    nodes = [f"{printable_id(m['node'])}@{printable(m.get('it', 0), 20)}" for m in payloads]
    runs = {printable_id(m["run"]) for m in payloads}
    return f"run {', '.join(sorted(runs))} node {', '.join(nodes)}" if nodes else None


@dlq_group.command("requeue")
@click.argument("queue")
@click.option("--limit", default=None, type=click.IntRange(min=1), help="Re-drive at most this many messages.")
@click.option("--json", "as_json", is_flag=True, help='Print {"deadLetterQueue", "requeued", "skipped"} as JSON.')
def dlq_requeue(queue: str, limit: int | None, as_json: bool) -> None:
    """Send the dead letters of QUEUE back to the queue they came from, to be run again."""
    admin = _known(_admin(_app()), queue)
    moved, skipped = admin.requeue(queue, limit)
    if as_json:
        click.echo(json.dumps({"deadLetterQueue": admin.dead_letter_queue(queue), "requeued": moved,
                               "skipped": skipped}, indent=2))
        return
    click.echo(f"re-drove {moved} message(s) from {admin.dead_letter_queue(queue)}"
               + (f"; left {skipped} that are not task messages" if skipped else ""))


@dlq_group.command("purge")
@click.argument("queue")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help='Print {"deadLetterQueue", "deleted"} as JSON.')
def dlq_purge(queue: str, yes: bool, as_json: bool) -> None:
    """Delete every dead letter of QUEUE (and bodies stored out of line)."""
    admin = _known(_admin(_app()), queue)
    dlq = admin.dead_letter_queue(queue)
    if not yes:
        click.confirm(f"Delete all {admin.count(dlq) or 0} message(s) of {dlq}?", abort=True)
    deleted = admin.purge(queue)
    if as_json:
        click.echo(json.dumps({"deadLetterQueue": dlq, "deleted": deleted}, indent=2))
    else:
        click.echo(f"deleted {deleted} message(s) from {dlq}")
