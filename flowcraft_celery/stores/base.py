"""The store protocols: what the runners need from durable state, independent of where it lives.

Three stores, each one idea:
- `ContextStore`: a run's context (JSON values under string keys) and its recorded node outputs.
- `StatusStore`: one status document per run (status, timestamps, final result, reconcile hints).
- `CoordinationStore`: fan-in arrivals, once-only claims and owner-token locks (Redis in production).

Implementations: `memory` (unit tests and the local runner), `cosmos` (context and status),
`redis` (coordination). Keys may contain dots: `_outputs.a` is one key, not a path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypedDict

from flowcraft_celery.stores.faults import PermanentError

#: Run statuses. `running`, `awaiting` are live; the others are final.
RunState = Literal["running", "awaiting", "completed", "failed", "cancelled", "stalled"]
FINAL_STATES: frozenset[str] = frozenset({"completed", "failed", "cancelled", "stalled"})


class _Missing:
    """Sentinel type for "no such key" (JSON `null` is a legitimate stored value)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


@dataclass(frozen=True)
class PatchOp:
    """One operation of `ContextStore.patch`: set `key` to `value`, or delete `key`."""

    op: Literal["set", "delete"]
    key: str
    value: Any = None


@dataclass(frozen=True)
class RecordedOutput:
    """A node's recorded output for one loop iteration."""

    node_id: str
    iteration: int
    output: Any
    action: str | None = None
    #: Nodes the result added to the run (`dynamicNodes`), kept so the graph can be rebuilt.
    dynamic_nodes: tuple[dict[str, Any], ...] = ()
    #: The routing decision made when the execution completed (`engine.decisions`, JSON form),
    #: written with the output so no replay decides it again; None in records of older versions.
    decision: dict[str, Any] | None = None


class ValueTooLargeError(PermanentError):
    """A single context value or output exceeds what the store can hold; names key and size."""

    def __init__(self, key: str, size: int, limit: int) -> None:
        super().__init__(f"value for key {key!r} is {size} bytes, over the store's limit of {limit} bytes")
        self.key = key
        self.size = size
        self.limit = limit


class ContextStore(Protocol):
    """A run's context and node outputs.

    Contract shared by every implementation:
    - writes of different keys by concurrent writers never lose one another;
    - `record_output` is create-if-absent per (run, node, iteration): the first wins and later
      calls return False without overwriting;
    - after `record_output`, the context shows the latest iteration's output under both
      `_outputs.<nodeId>` and `<nodeId>` (through `get`, `has` and `snapshot`).
    """

    def create_run(self, run_id: str, initial: Mapping[str, Any]) -> None:
        """Create the run's context with its initial keys (idempotent for the same run id)."""

    def get(self, run_id: str, key: str) -> Any:
        """The value under `key`, or `MISSING`."""

    def has(self, run_id: str, key: str) -> bool:
        """Whether `key` is present."""

    def set(self, run_id: str, key: str, value: Any) -> None:
        """Set one key."""

    def delete(self, run_id: str, key: str) -> None:
        """Delete one key (no error when absent)."""

    def patch(self, run_id: str, ops: Sequence[PatchOp]) -> None:
        """Apply several set/delete operations."""

    def snapshot(self, run_id: str) -> dict[str, Any]:
        """The whole context as a dict, outputs included as `_outputs.<id>` and `<id>`."""

    def record_output(
        self, run_id: str, node_id: str, iteration: int, output: Any, action: str | None = None,
        dynamic_nodes: Sequence[Mapping[str, Any]] = (), decision: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record a node's output (with the nodes its result added and its routing decision) once,
        in one write; True if this call recorded it, False if one existed."""

    def get_output(self, run_id: str, node_id: str, iteration: int) -> RecordedOutput | None:
        """The output recorded for (node, iteration), or None."""

    def outputs(self, run_id: str) -> list[RecordedOutput]:
        """Every recorded output of the run, all iterations (the durable record of what ran)."""

    def snapshot_and_outputs(self, run_id: str) -> tuple[dict[str, Any], list[RecordedOutput]]:
        """`snapshot` and `outputs` together (what replaying a finished run reads), in one read."""

    def delete_run(self, run_id: str) -> int:
        """Remove everything stored for the run; return how many items (keys and outputs) it had."""


class RunStatusDoc(TypedDict, total=False):
    """The status document of one run (camelCase like the reference's documents)."""

    runId: str
    blueprintId: str
    blueprintVersion: str | None
    status: RunState
    createdAt: float
    lastUpdated: float
    wakeAt: float | None
    awaiting: list[str]
    deployment: str
    parentRunId: str | None
    parentNodeId: str | None
    parentIteration: int
    depth: int
    result: dict[str, Any] | None
    errors: list[dict[str, Any]]
    #: Bumped each time the run's Redis state is rebuilt; the ledger's marker holds the same number.
    generation: int
    #: The value handed to the start nodes (a subflow child's input), for rebuilding the run.
    startInput: Any
    #: Sleeping node executions: token -> wake-up time (so a rebuilt run wakes them on time).
    sleeping: dict[str, float]
    rebuiltAt: float | None


class StatusStore(Protocol):
    """One status document per run; final states are never overwritten.

    A store belongs to one deployment: `create` stamps the document's `deployment`, and
    `live_page` and `list_runs` return only that deployment's runs (point reads do not filter).
    """

    def create(self, doc: RunStatusDoc) -> None:
        """Write a new run's status document (idempotent for the same run id)."""

    def get(self, run_id: str) -> RunStatusDoc | None:
        """The run's status document, or None."""

    def delete(self, run_id: str) -> bool:
        """Remove the run's status document (a start that did not happen, a purge); False if none."""

    def touch(self, run_id: str) -> None:
        """Set `lastUpdated` to now (a single small write)."""

    def update(self, run_id: str, fields: Mapping[str, Any]) -> bool:
        """Set fields (and `lastUpdated`) unless the run is final; True if applied."""

    def finish(
        self, run_id: str, status: RunState, result: Mapping[str, Any] | None,
        errors: Sequence[Mapping[str, Any]], expire_after: int | None = None,
    ) -> RunStatusDoc | None:
        """Move the run to a final state once; the document as finished if this call did it, else
        None. With `expire_after`, the status item expires that many seconds later (set in the same
        write: `expire` not needed)."""

    def record_sleep(self, run_id: str, node_token: str, wake_at: float) -> None:
        """Note that `node_token` sleeps until `wake_at` (`sleeping` and `wakeAt`), unless final."""

    def live_page(self, page_size: int, continuation: str | None) -> tuple[list[RunStatusDoc], str | None]:
        """One page of this deployment's runs not final (`runId`, `lastUpdated`, `wakeAt`), from
        `continuation` ('' or None: the first page), and where the next page starts (None: no more)."""

    def list_runs(self, status: str | None = None, limit: int = 100) -> list[RunStatusDoc]:
        """This deployment's newest runs first, optionally only those in `status`."""

    def count_by_status(self, statuses: Sequence[str]) -> dict[str, int]:
        """How many of this deployment's runs are in each of `statuses`."""


@dataclass
class JoinState:
    """What a join has received so far: values by predecessor, and skipped predecessors."""

    arrived: dict[str, Any] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)


class CoordinationStore(Protocol):
    """Atomic fan-in bookkeeping and locks; every operation is idempotent under redelivery."""

    def arrive(self, scope: str, predecessor: str, value: Any, skipped: bool = False,
               values_from: int = 0) -> JoinState:
        """Record one predecessor's arrival (or skip) at a join, once, and return the state after it.
        The arrived values may be left out (each arrived name then maps to None) while fewer than
        `values_from` predecessors have arrived or been skipped: an `all` join needs them only
        when it fires, and fetching every value at every arrival would cost a wide join
        quadratically."""

    def claim(self, scope: str, token: str, ttl: float | None = None) -> bool:
        """Claim `scope` for `token`: True for the first claimant and again for the same token."""

    def acquire(self, name: str, token: str, ttl: float) -> bool:
        """Take a lock for `token` if free (or already ours); it expires after `ttl` seconds."""

    def holder(self, name: str) -> str | None:
        """Who holds lock `name` right now (None when it is free or lapsed)."""

    def release(self, name: str, token: str) -> bool:
        """Release a lock only if `token` owns it."""
