"""What node code sees: the run's context API and the per-execution node context (SPEC §2, §4)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowcraft_celery.model.json_values import check_json
from flowcraft_celery.stores.base import MISSING, ContextStore, PatchOp


class RunContext:
    """The run's context: JSON values under string keys (dots are part of a key, not a path)."""

    def __init__(self, store: ContextStore, run_id: str) -> None:
        self._store = store
        self.run_id = run_id

    def get(self, key: str, default: Any = None) -> Any:
        """The value under `key`, or `default`."""
        value = self._store.get(self.run_id, key)
        return default if value is MISSING else value

    def set(self, key: str, value: Any) -> None:
        """Set one key (NotJsonError for a value JSON cannot carry exactly)."""
        check_json(value, f"context key {key!r}")
        self._store.set(self.run_id, key, value)

    def has(self, key: str) -> bool:
        """Whether `key` is present."""
        return self._store.has(self.run_id, key)

    def delete(self, key: str) -> None:
        """Remove `key` (no error when absent)."""
        self._store.delete(self.run_id, key)

    def patch(self, ops: Sequence[PatchOp | Mapping[str, Any]]) -> None:
        """Apply several `{op: set|delete, key, value}` operations together."""
        parsed = [op if isinstance(op, PatchOp) else PatchOp(op["op"], op["key"], op.get("value"))
                  for op in ops]
        for op in parsed:
            if op.op not in ("set", "delete"):
                raise ValueError(f"patch op must be 'set' or 'delete', got {op.op!r} for key {op.key!r}")
            if op.op == "set":
                check_json(op.value, f"context key {op.key!r}")
        self._store.patch(self.run_id, parsed)

    def to_json(self) -> dict[str, Any]:
        """A snapshot of the whole context."""
        return self._store.snapshot(self.run_id)


@dataclass
class NodeContext:
    """Everything a node implementation receives for one execution."""

    input: Any
    params: dict[str, Any]
    context: RunContext
    run_id: str
    node_id: str
    blueprint_id: str
    iteration: int = 0
    attempt: int = 1
    deps: Mapping[str, Any] = field(default_factory=dict)
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def idempotency_key(self) -> str:
        """Stable across retries and redeliveries of this node in this run and loop iteration."""
        return f"{self.run_id}:{self.node_id}:{self.iteration}"
