"""Removing what a throwaway deployment made: its Azure queues, its Cosmos DB database, its Redis keys.

The conformance command's own workers run under a fresh tag (queue, database and key prefix); once
they stop, nothing of theirs is worth keeping, and on a real account a database left behind costs
money. Removal is best effort: what could not be removed is reported, never raised, so it cannot
hide the result of what ran.
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery

from flowcraft_celery.settings import Settings

#: Keys unlinked per Redis command.
KEY_BATCH = 500


def remove_throwaway(app: Celery, queue_prefix: str, database: str, key_prefixes: Sequence[str]) -> list[str]:
    """Delete the app's Azure queues whose names start with `queue_prefix` (their dead-letter and
    shard queues too), the Cosmos DB `database` and the Redis keys under each of `key_prefixes`
    (prefixes of letters, digits, `-` and `:`); return one line per thing that could not be removed."""
    problems = []
    try:
        _remove_queues(app, queue_prefix)
    except Exception as exc:
        problems.append(f"Azure queues {queue_prefix}*: {exc}".splitlines()[0])
    try:
        _remove_database(app, database)
    except Exception as exc:
        problems.append(f"Cosmos DB database {database}: {exc}".splitlines()[0])
    try:
        _remove_keys(app, key_prefixes)
    except Exception as exc:
        problems.append(f"Redis keys {', '.join(p + '*' for p in key_prefixes)}: {exc}".splitlines()[0])
    return problems


def _remove_queues(app: Celery, queue_prefix: str) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    from flowcraft_celery.distributed.ops.broker_inspect import QueueAdmin

    with app.connection_for_write() as connection:
        admin = QueueAdmin.from_connection(connection)
        for queue in admin.queues(with_counts=False):
            if queue.name.startswith(queue_prefix) and not queue.transient:
                try:
                    admin.client(queue.name).delete_queue()
                except ResourceNotFoundError:
                    continue


def _remove_database(app: Celery, database: str) -> None:
    from azure.cosmos.exceptions import CosmosResourceNotFoundError

    from flowcraft_celery.stores.cosmos_client import get_client

    settings = Settings.from_conf(app.conf)
    client = get_client(app.conf.get("cosmos_connection_string"), app.conf.get("cosmos_verify_tls"),
                        settings.cosmos_credential or None)
    try:
        client.delete_database(database)
    except CosmosResourceNotFoundError:
        return


def _remove_keys(app: Celery, key_prefixes: Sequence[str]) -> None:
    from transports.azurequeue import redis_from_url

    client = redis_from_url(Settings.from_conf(app.conf).redis_url)
    try:
        for prefix in key_prefixes:
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"{prefix}*", count=1000):
                batch.append(key)
                if len(batch) >= KEY_BATCH:
                    client.unlink(*batch)
                    batch = []
            if batch:
                client.unlink(*batch)
    finally:
        client.close()
