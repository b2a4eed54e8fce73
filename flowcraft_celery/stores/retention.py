"""A finished run's records in every store, expired or removed together.

A run leaves its status item and its context and output items in Cosmos DB, and its ledger keys,
joins and claims in Redis. `expire` gives them all the same lifetime (Cosmos per-item TTL, Redis
EXPIRE); `remove` deletes them now (`flowcraft-celery purge`). Both leave the status item for last,
so a failure midway leaves a finished run that the next purge still finds. The caller names the
run's join scopes (which joins a run has is a question of its graph, not of the stores).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from flowcraft_celery.stores.base import RunStatusDoc
from flowcraft_celery.stores.cosmos import CosmosContextStore, CosmosStatusStore
from flowcraft_celery.stores.ledger import RunLedger
from flowcraft_celery.stores.redis import RedisCoordinationStore


@dataclass
class Removed:
    """What removing runs deleted (or, in a dry run, would delete)."""

    status_items: int = 0
    context_items: int = 0
    redis_keys: int = 0

    def add(self, other: Removed) -> None:
        """Count `other` in as well."""
        self.status_items += other.status_items
        self.context_items += other.context_items
        self.redis_keys += other.redis_keys


class RunRecords:
    """Expiry and removal of runs' records across Cosmos DB and Redis."""

    def __init__(self, contexts: CosmosContextStore, statuses: CosmosStatusStore, ledger: RunLedger,
                 coordination: RedisCoordinationStore) -> None:
        self.contexts = contexts
        self.statuses = statuses
        self.ledger = ledger
        self.coordination = coordination

    def expire(self, run_id: str, seconds: int, scopes: Sequence[str], status: bool = True) -> None:
        """Let every record of the run expire `seconds` from now (the status item too, unless
        `status` is False: finishing the run set its TTL already)."""
        self.contexts.expire_run(run_id, seconds)
        if getattr(self.coordination, "client", None) is self.ledger.client:  # one Redis: joins expire with the ledger
            self.ledger.expire_run(run_id, seconds, self.coordination.scope_keys(scopes))
        else:
            self.coordination.expire_scopes(scopes, seconds)
            self.ledger.expire_run(run_id, seconds)
        if status:
            self.statuses.expire(run_id, seconds)

    def finished_before(self, before: float) -> Iterator[RunStatusDoc]:
        """Runs in a final state, last updated before `before` (epoch seconds)."""
        return self.statuses.find_finished(before)

    def remove(self, run_id: str, scopes: Sequence[str], dry_run: bool = False) -> Removed:
        """Delete every record of the run now (with `dry_run` only count them)."""
        if dry_run:
            return Removed(
                status_items=1, context_items=self.contexts.count_items(run_id),
                redis_keys=self.ledger.delete_run(run_id, dry_run=True)
                + self.coordination.delete_scopes(scopes, dry_run=True),
            )
        context_items = self.contexts.delete_run(run_id)
        redis_keys = self.ledger.delete_run(run_id) + self.coordination.delete_scopes(scopes)
        return Removed(int(self.statuses.delete(run_id)), context_items, redis_keys)
