"""How runs read for people: local times, durations, a status as labelled lines (machines use `--json`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flowcraft_celery.cli.tables import seconds
from flowcraft_celery.model.ids import printable_id
from flowcraft_celery.model.printable import printable
from flowcraft_celery.stores.base import FINAL_STATES


def local_time(epoch: Any) -> str:
    """`2026-11-28 14:03:07` in this machine's time zone; `-` when absent."""
    if not isinstance(epoch, (int, float)) or isinstance(epoch, bool) or epoch <= 0:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def run_duration(doc: Mapping[str, Any], now: float | None = None) -> str:
    """How long a run took (final) or has taken so far (live)."""
    created = doc.get("createdAt")
    if not isinstance(created, (int, float)):
        return "-"
    end = doc.get("lastUpdated") if doc.get("status") in FINAL_STATES else (now or time.time())
    return seconds(float(end or created) - float(created))


def awaiting_text(tokens: Sequence[str], label: Callable[[str], str] | None = None) -> str:
    """`approve@0` is node `approve` in loop iteration 0; `label` gives a token as people read it
    (`ask@2000005` as `ask@2.5`: passes, outer loop first)."""
    parts = []
    for token in tokens:
        node, _, iteration = (label(token) if label is not None else token).rpartition("@")
        parts.append(f"{printable_id(node)} (iteration {printable(iteration)})" if node else printable_id(token))
    return ", ".join(parts)


def status_lines(doc: Mapping[str, Any], label: Callable[[str], str] | None = None) -> list[str]:
    """A run's status document as labelled lines (`label`: see `awaiting_text`)."""
    version = doc.get("blueprintVersion")
    status = printable(doc.get("status"))
    shown_version = f" (version {printable(str(version))})" if version else ""
    rows: list[tuple[str, str]] = [
        ("run", printable_id(doc.get("runId"))),
        ("blueprint", printable_id(doc.get("blueprintId")) + shown_version),
        ("status", status),
        ("started", local_time(doc.get("createdAt"))),
        ("updated", local_time(doc.get("lastUpdated"))),
        ("took" if doc.get("status") in FINAL_STATES else "running for", run_duration(doc)),
    ]
    if doc.get("awaiting") and doc.get("status") not in FINAL_STATES:
        rows.append(("awaiting", awaiting_text(doc["awaiting"], label) + "  (continue with `flowcraft-celery resume`)"))
    elif doc.get("awaiting"):
        rows.append(("awaited", awaiting_text(doc["awaiting"], label) + f"  (never resumed: the run {status})"))
    if doc.get("wakeAt") and doc.get("status") not in FINAL_STATES:
        rows.append(("wakes at", local_time(doc.get("wakeAt"))))
    if doc.get("parentRunId"):
        parent, node = printable_id(doc.get("parentRunId")), printable_id(doc.get("parentNodeId"))
        rows.append(("parent", f"{parent} (node {node})"))
    for error in doc.get("errors") or []:
        where = error.get("nodeId") if isinstance(error, Mapping) else None
        message = error.get("message") if isinstance(error, Mapping) else error
        rows.append(("error", printable(f"{where}: {message}" if where else str(message), limit=2000)))
    width = max(len(label) for label, _ in rows)
    return [f"{label.ljust(width)}  {value}" for label, value in rows]
