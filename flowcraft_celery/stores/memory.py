"""In-memory stores for unit tests and the local runner; never a stand-in for an integration.

Values are checked like the Cosmos store checks them (`limits.check_value`), so the local
runner refuses what a distributed run could not store.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from flowcraft_celery.stores.base import (
    FINAL_STATES,
    MISSING,
    JoinState,
    PatchOp,
    RecordedOutput,
    RunState,
    RunStatusDoc,
)
from flowcraft_celery.stores.limits import check_value

_OUTPUTS = "_outputs."


class MemoryContextStore:
    """ContextStore in a dict, guarded by a lock so threads behave like concurrent writers.

    Every write gets a sequence number, so between a key set through the context API and a
    recorded output of a node of that name, the later write is what reads see.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()  # re-entered: snapshot_and_outputs reads both under one hold
        self._seq = itertools.count()
        self._values: dict[str, dict[str, tuple[int, Any]]] = {}
        self._outputs: dict[str, dict[tuple[str, int], tuple[int, RecordedOutput]]] = {}

    def create_run(self, run_id: str, initial: Mapping[str, Any]) -> None:
        for key, value in initial.items():
            check_value(key, value)
        with self._lock:
            if run_id not in self._values:
                self._values[run_id] = {k: (next(self._seq), v) for k, v in initial.items()}
                self._outputs[run_id] = {}

    def _latest(self, run_id: str, node_id: str) -> tuple[int, Any] | None:
        """The latest iteration's output of a node with its write sequence, or None."""
        found = [o for (n, _), o in self._outputs.get(run_id, {}).items() if n == node_id]
        if not found:
            return None
        seq, recorded = max(found, key=lambda o: o[1].iteration)
        return seq, recorded.output

    def get(self, run_id: str, key: str) -> Any:
        with self._lock:
            node_id = key[len(_OUTPUTS):] if key.startswith(_OUTPUTS) else key
            candidates = [c for c in (self._latest(run_id, node_id), self._values.get(run_id, {}).get(key))
                          if c is not None]
            return max(candidates, key=lambda c: c[0])[1] if candidates else MISSING

    def has(self, run_id: str, key: str) -> bool:
        return self.get(run_id, key) is not MISSING

    def set(self, run_id: str, key: str, value: Any) -> None:
        check_value(key, value)
        with self._lock:
            self._values.setdefault(run_id, {})[key] = (next(self._seq), value)

    def delete(self, run_id: str, key: str) -> None:
        with self._lock:
            self._values.get(run_id, {}).pop(key, None)

    def patch(self, run_id: str, ops: Sequence[PatchOp]) -> None:
        for op in ops:
            if op.op == "set":
                check_value(op.key, op.value)
        with self._lock:
            values = self._values.setdefault(run_id, {})
            for op in ops:
                if op.op == "set":
                    values[op.key] = (next(self._seq), op.value)
                else:
                    values.pop(op.key, None)

    def snapshot(self, run_id: str) -> dict[str, Any]:
        with self._lock:
            found = dict(self._values.get(run_id, {}))
            latest: dict[str, tuple[int, RecordedOutput]] = {}
            for (node_id, _), (seq, recorded) in self._outputs.get(run_id, {}).items():
                if node_id not in latest or recorded.iteration > latest[node_id][1].iteration:
                    latest[node_id] = (seq, recorded)
            for node_id, (seq, recorded) in latest.items():
                for key in (f"{_OUTPUTS}{node_id}", node_id):
                    if key not in found or found[key][0] < seq:
                        found[key] = (seq, recorded.output)
            return {key: value for key, (_, value) in found.items()}

    def record_output(
        self, run_id: str, node_id: str, iteration: int, output: Any, action: str | None = None,
        dynamic_nodes: Sequence[Mapping[str, Any]] = (), decision: Mapping[str, Any] | None = None,
    ) -> bool:
        check_value(f"{_OUTPUTS}{node_id}", output)
        with self._lock:
            outputs = self._outputs.setdefault(run_id, {})
            if (node_id, iteration) in outputs:
                return False
            recorded = RecordedOutput(node_id, iteration, output, action, tuple(dict(n) for n in dynamic_nodes),
                                      None if decision is None else dict(decision))
            outputs[(node_id, iteration)] = (next(self._seq), recorded)
            return True

    def get_output(self, run_id: str, node_id: str, iteration: int) -> RecordedOutput | None:
        with self._lock:
            found = self._outputs.get(run_id, {}).get((node_id, iteration))
            return None if found is None else found[1]

    def outputs(self, run_id: str) -> list[RecordedOutput]:
        with self._lock:
            return [recorded for _, recorded in self._outputs.get(run_id, {}).values()]

    def snapshot_and_outputs(self, run_id: str) -> tuple[dict[str, Any], list[RecordedOutput]]:
        with self._lock:
            return self.snapshot(run_id), self.outputs(run_id)

    def delete_run(self, run_id: str) -> int:
        with self._lock:
            return len(self._values.pop(run_id, {})) + len(self._outputs.pop(run_id, {}))


class MemoryStatusStore:
    """StatusStore in a dict; `deployment` scopes `live_page` and `list_runs` like Cosmos's."""

    def __init__(self, deployment: str = "") -> None:
        self._lock = threading.Lock()
        self._docs: dict[str, RunStatusDoc] = {}
        self.deployment = deployment

    def create(self, doc: RunStatusDoc) -> None:
        with self._lock:
            self._docs.setdefault(doc["runId"], RunStatusDoc(**{**doc, "deployment": self.deployment}))

    def get(self, run_id: str) -> RunStatusDoc | None:
        with self._lock:
            doc = self._docs.get(run_id)
            return None if doc is None else RunStatusDoc(**doc)

    def delete(self, run_id: str) -> bool:
        with self._lock:
            return self._docs.pop(run_id, None) is not None

    def touch(self, run_id: str) -> None:
        with self._lock:
            if run_id in self._docs:
                self._docs[run_id]["lastUpdated"] = time.time()

    def update(self, run_id: str, fields: Mapping[str, Any]) -> bool:
        with self._lock:
            doc = self._docs.get(run_id)
            if doc is None or doc.get("status") in FINAL_STATES:
                return False
            doc.update(fields)  # type: ignore[typeddict-item]
            doc["lastUpdated"] = time.time()
            return True

    def finish(self, run_id: str, status: RunState, result: Mapping[str, Any] | None,
               errors: Sequence[Mapping[str, Any]], expire_after: int | None = None) -> RunStatusDoc | None:
        with self._lock:
            doc = self._docs.get(run_id)
            if doc is None or doc.get("status") in FINAL_STATES:
                return None
            doc["status"] = status
            doc["result"] = dict(result) if result is not None else None
            doc["errors"] = [dict(e) for e in errors]
            doc["lastUpdated"] = time.time()
            return RunStatusDoc(**doc)

    def record_sleep(self, run_id: str, node_token: str, wake_at: float) -> None:
        with self._lock:
            doc = self._docs.get(run_id)
            if doc is not None and doc.get("status") not in FINAL_STATES:
                doc["sleeping"] = {**(doc.get("sleeping") or {}), node_token: wake_at}
                doc["wakeAt"] = wake_at
                doc["lastUpdated"] = time.time()

    def live_page(self, page_size: int, continuation: str | None) -> tuple[list[RunStatusDoc], str | None]:
        """One page of this deployment's runs not final; the continuation is the next offset."""
        with self._lock:
            live = [RunStatusDoc(**d) for d in self._docs.values()
                    if d.get("deployment") == self.deployment and d.get("status") not in FINAL_STATES]
        start = int(continuation or 0)
        end = start + page_size
        return live[start:end], str(end) if end < len(live) else None

    def list_runs(self, status: str | None = None, limit: int = 100) -> list[RunStatusDoc]:
        with self._lock:
            docs = [RunStatusDoc(**d) for d in self._docs.values()
                    if d.get("deployment") == self.deployment and (status is None or d.get("status") == status)]
        docs.sort(key=lambda d: d.get("createdAt", 0.0), reverse=True)
        return docs[:limit]

    def count_by_status(self, statuses: Sequence[str]) -> dict[str, int]:
        """How many of this deployment's runs are in each of `statuses`."""
        with self._lock:
            mine = [str(d.get("status")) for d in self._docs.values() if d.get("deployment") == self.deployment]
        return {status: mine.count(status) for status in statuses}


class MemoryCoordinationStore:
    """CoordinationStore in dicts: idempotent arrivals, once-only claims, owner-token locks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._joins: dict[str, JoinState] = {}
        self._claims: dict[str, str] = {}
        self._locks: dict[str, tuple[str, float]] = {}

    def arrive(self, scope: str, predecessor: str, value: Any, skipped: bool = False,
               values_from: int = 0) -> JoinState:
        with self._lock:
            state = self._joins.setdefault(scope, JoinState())
            if predecessor not in state.arrived and predecessor not in state.skipped:
                if skipped:
                    state.skipped.add(predecessor)
                else:
                    state.arrived[predecessor] = value
            return JoinState(dict(state.arrived), set(state.skipped))

    def claim(self, scope: str, token: str, ttl: float | None = None) -> bool:
        with self._lock:
            return self._claims.setdefault(scope, token) == token

    def acquire(self, name: str, token: str, ttl: float) -> bool:
        with self._lock:
            holder = self._locks.get(name)
            now = time.monotonic()
            if holder is None or holder[0] == token or holder[1] <= now:
                self._locks[name] = (token, now + ttl)
                return True
            return False

    def holder(self, name: str) -> str | None:
        with self._lock:
            held = self._locks.get(name)
            return held[0] if held is not None and held[1] > time.monotonic() else None

    def release(self, name: str, token: str) -> bool:
        with self._lock:
            holder = self._locks.get(name)
            if holder is not None and holder[0] == token:
                del self._locks[name]
                return True
            return False
