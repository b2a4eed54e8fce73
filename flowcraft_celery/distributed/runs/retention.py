"""Finished runs expire: the retention given to a run when it ends, and `purge` of old finished runs.

When a run becomes completed, failed or cancelled, whoever made it so calls `expire_finished_run`
once: its status, context, outputs and Redis keys then expire after `FLOWCRAFT_RETENTION_DAYS`
(Cosmos DB per-item TTL, Redis EXPIRE). Runs that are running, awaiting or sleeping get no expiry.
`purge` deletes finished runs last updated longer ago than a given age, for the Cosmos emulator
(which has no TTL), for runs a crash left without expiry, and for clean-up on demand.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flowcraft_celery.distributed.core.runtime import Runtime
from flowcraft_celery.distributed.runs.graphs import blueprint_graph
from flowcraft_celery.engine.dispatch import join_scopes
from flowcraft_celery.model.graph import DynamicAddition
from flowcraft_celery.stores.guard import is_outage
from flowcraft_celery.stores.retention import Removed

logger = logging.getLogger("flowcraft.retention")

#: Runs removed per query of finished runs (each page is queried afresh, since removing changes it).
PURGE_PAGE = 100


def run_scopes(rt: Runtime, run_id: str, blueprint_id: str | None) -> list[str]:
    """The join scopes the run may have in Redis (none when this process lacks its blueprint)."""
    blueprint = rt.blueprints.get(str(blueprint_id))
    if blueprint is None:
        return []
    tokens, additions = rt.ledger.tokens_and_dynamic(run_id)
    graph = blueprint_graph(blueprint).extend(DynamicAddition.from_dict(d) for d in additions)
    return join_scopes(graph, run_id, tokens)


def retention_ttl(rt: Runtime) -> int | None:
    """Seconds a finished run's records are kept (a per-item TTL), None when they are kept for ever."""
    seconds = rt.settings.retention_seconds
    return math.ceil(seconds) if seconds > 0 else None


def expire_finished_run(rt: Runtime, run_id: str, doc: Mapping[str, Any] | None = None,
                        status_expiring: bool = False) -> None:
    """The run has just become final: let all its records expire after the retention
    (`status_expiring`: the status item got its TTL when the run was finished).

    Best effort: the final state is already recorded, so a store error here is logged, not raised
    (`flowcraft-celery purge` removes such a run later).
    """
    ttl = retention_ttl(rt)
    if ttl is None:
        return
    try:
        doc = doc if doc is not None else rt.statuses.get(run_id)
        scopes = run_scopes(rt, run_id, doc.get("blueprintId") if doc else None)
        rt.records.expire(run_id, ttl, scopes, status=not status_expiring)
    except Exception as exc:
        outage = is_outage(exc)
        logger.log(logging.INFO if outage else logging.WARNING, "run %s ended but its records got no expiry (%s); "
                   "`flowcraft-celery purge` removes them", run_id, exc, exc_info=not outage)


@dataclass
class PurgeReport:
    """What one purge removed (or, in a dry run, would remove)."""

    cutoff: float
    dry_run: bool
    runs: Counter[str] = field(default_factory=Counter)
    removed: Removed = field(default_factory=Removed)


def purge(rt: Runtime, older_than: float, dry_run: bool = False, now: float | None = None) -> PurgeReport:
    """Remove every finished run last updated more than `older_than` seconds ago, from every store.

    Only this deployment's runs (its queue prefix and default queue); runs that are running, awaiting
    or sleeping are never touched. With `dry_run`, only count.
    """
    report = PurgeReport(cutoff=(time.time() if now is None else now) - older_than, dry_run=dry_run)
    seen: set[str] = set()
    while True:
        page = []
        for doc in rt.records.finished_before(report.cutoff):
            if doc["runId"] not in seen:
                page.append(doc)
            if not dry_run and len(page) == PURGE_PAGE:
                break
        if not page:
            return report
        for doc in page:
            run_id = doc["runId"]
            seen.add(run_id)
            scopes = run_scopes(rt, run_id, doc.get("blueprintId"))
            report.removed.add(rt.records.remove(run_id, scopes, dry_run))
            report.runs[str(doc.get("status"))] += 1
        if dry_run:
            return report
