"""Cosmos DB implementations of the context store and the status store.

Context (container `context`, partition key `/runId`): one item per context key
`{id: "c:<key>", kind: "ctx", key, value}` and one per recorded output
`{id: "o:<node>:<iteration>", kind: "out", node, iteration, output, action, decision}` (the
routing decision written with the output, `engine.decisions`). So `set` is one
upsert, `record_output` one create (409 = already recorded), parallel writers of different keys
never touch the same item, and no item grows with the run (the 2 MiB limit applies per value).

Outputs share their names with keys: `_outputs.x` and `x` show node `x`'s latest iteration's
output (highest iteration) or the value `set` under that name, whichever was written last
(`recordedAt` against `writtenAt`, the writers' clocks), as in the reference's single context.
Two writers of the same key: the last write in the server's order wins. `patch` is one
transactional batch per 100 operations on real Cosmos DB; where the server rejects batches (the
cosmosdb-server emulator) it falls back, once and for the life of the store, to one request per
key, which is atomic per key only.

Status (container `runs`, partition key `/runId`): one item per run; `touch` is one patch;
`update` and `finish` are patches guarded by a filter predicate (the run is not final), so a
final state is never overwritten and only one `finish` wins. Each item carries the `deployment`
that created it; `live_page` and `list_runs` see only their own deployment's runs, so two
deployments sharing a database never reconcile or list each other's runs.

Retention: both containers have TTL on with no default expiry (`defaultTtl: -1`), so an item lives
until it gets a per-item `ttl`; `expire_run` and `expire` give a finished run's items one (Cosmos DB
then deletes them `ttl` seconds after that write). The cosmosdb-server emulator keeps such items,
so reads here treat an item past its `ttl` as gone, and `flowcraft-celery purge` deletes them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, cast
from urllib.parse import quote

from azure.core import MatchConditions
from azure.cosmos import ContainerProxy, CosmosClient
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosBatchOperationError,
    CosmosHttpResponseError,
    CosmosResourceNotFoundError,
)

from flowcraft_celery.stores.base import (
    FINAL_STATES,
    MISSING,
    PatchOp,
    RecordedOutput,
    RunState,
    RunStatusDoc,
)
from flowcraft_celery.stores.cosmos_client import create_once, ensure_container, read_item_or_none
from flowcraft_celery.stores.cosmos_direct import DirectCreates
from flowcraft_celery.stores.limits import MAX_ITEM_BYTES, check_item_size, json_size

log = logging.getLogger(__name__)

#: Operations per transactional batch and per patch request (Cosmos DB limits).
MAX_BATCH_OPS = 100
MAX_PATCH_OPS = 10
#: Ids longer than this are replaced by a hash (Cosmos ids are limited to 255 characters).
_MAX_ID_CHARS = 200
_OUTPUTS_PREFIX = "_outputs."
_SYSTEM_FIELDS = frozenset({"id", "_rid", "_self", "_etag", "_attachments", "_ts", "ttl"})
#: One transactional-batch operation: `(kind, args)` or `(kind, args, options)`, as the SDK takes them.
BatchOp = tuple[Any, ...]
#: Status codes with which a server that lacks transactional batch refuses one.
_BATCH_UNSUPPORTED = frozenset({400, 405, 500, 501})

CONTEXT_INDEXING: dict[str, Any] = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [
        {"path": "/kind/?"},
        {"path": "/node/?"},
        {"path": "/iteration/?"},
    ],
    "excludedPaths": [{"path": "/*"}],
}

RUNS_INDEXING: dict[str, Any] = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [
        {"path": "/status/?"},
        {"path": "/lastUpdated/?"},
        {"path": "/wakeAt/?"},
        {"path": "/createdAt/?"},
        {"path": "/blueprintId/?"},
        {"path": "/parentRunId/?"},
        {"path": "/deployment/?"},
    ],
    "excludedPaths": [{"path": "/*"}],
    "compositeIndexes": [
        [{"path": "/deployment", "order": "ascending"}, {"path": "/status", "order": "ascending"},
         {"path": "/lastUpdated", "order": "ascending"}],
        [{"path": "/deployment", "order": "ascending"}, {"path": "/status", "order": "ascending"},
         {"path": "/createdAt", "order": "descending"}],
        [{"path": "/deployment", "order": "ascending"}, {"path": "/createdAt", "order": "descending"}],
    ],
}


def item_id(prefix: str, name: str) -> str:
    """A valid, collision-free Cosmos item id for `name` (escaped, or hashed when long)."""
    escaped = quote(name, safe="")
    if len(escaped) <= _MAX_ID_CHARS:
        return f"{prefix}:{escaped}"
    return f"{prefix}h:{hashlib.sha256(name.encode()).hexdigest()}"


def expired(item: Mapping[str, Any], now: float | None = None) -> bool:
    """Whether an item's per-item `ttl` has run out (Cosmos DB hides such items; the emulator does not)."""
    ttl = item.get("ttl")
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or ttl <= 0:
        return False
    return float(item.get("_ts", 0)) + ttl < (time.time() if now is None else now)


def ttl_operations(ids: Sequence[str], seconds: int) -> list[BatchOp]:
    """Transactional-batch patches giving each item a per-item TTL of `seconds`."""
    return [("patch", (id_, [{"op": "set", "path": "/ttl", "value": seconds}])) for id_ in ids]


def _create_once(container: ContainerProxy, direct: DirectCreates | None, item: dict[str, Any],
                 partition_key: str) -> bool:
    """Create `item` once (False: an item with its id exists), signed here when `direct` can,
    else through the SDK."""
    created = direct.create(item, partition_key) if direct is not None else None
    return create_once(container, item) if created is None else created


def _output_node(key: str) -> str:
    """The node id whose output a context key may name (`_outputs.x` and `x` both name `x`)."""
    return key[len(_OUTPUTS_PREFIX):] if key.startswith(_OUTPUTS_PREFIX) else key


#: The `iteration` of a context key's item: above every output's, so a lookup's first row is
#: the key's own item and the second the node's latest output.
_CTX_ITERATION = 2 ** 40


def _ctx_item(run_id: str, key: str, value: Any) -> dict[str, Any]:
    """The item holding one context key, stamped with its write time."""
    item = {
        "id": item_id("c", key), "runId": run_id, "kind": "ctx", "key": key,
        "value": value, "iteration": _CTX_ITERATION, "writtenAt": time.time(),
    }
    check_item_size(key, item, value)
    return item


def _written(item: Mapping[str, Any]) -> float:
    """When an item's value was written: a key's `writtenAt`, an output's `recordedAt` (0 if unknown)."""
    stamp = item.get("writtenAt", item.get("recordedAt"))
    return float(stamp) if isinstance(stamp, (int, float)) else 0.0


def _snapshot_of(items: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A run's context from its items: each key's value, each node's latest output under
    `_outputs.<id>` and `<id>` (the later written wins), expired items left out."""
    found: dict[str, tuple[float, Any]] = {}
    latest: dict[str, dict[str, Any]] = {}
    now = time.time()
    for item in items:
        if expired(item, now):
            continue
        if item.get("kind") == "ctx":
            found[item["key"]] = (_written(item), item.get("value"))
        elif item.get("kind") == "out":
            node = item["node"]
            if node not in latest or item["iteration"] > latest[node]["iteration"]:
                latest[node] = item
    for node, item in latest.items():
        for key in (_OUTPUTS_PREFIX + node, node):
            if key not in found or found[key][0] <= _written(item):
                found[key] = (_written(item), item.get("output"))
    return {key: value for key, (_, value) in found.items()}


def _recorded(item: Mapping[str, Any]) -> RecordedOutput:
    """A recorded output from its item."""
    decision = item.get("decision")
    return RecordedOutput(str(item["node"]), int(item["iteration"]), item.get("output"), item.get("action"),
                          tuple(item.get("dynamicNodes") or ()), dict(decision) if isinstance(decision, dict) else None)


def _output_item_id(node_id: str, iteration: int) -> str:
    """The id of the item recording (node, iteration)."""
    return f"{item_id('o', node_id)}:{iteration}"


def _collapse(ops: Sequence[PatchOp]) -> list[PatchOp]:
    """The last operation per key: the same effect as applying all of them in order."""
    last: dict[str, PatchOp] = {}
    for op in ops:
        if op.op not in ("set", "delete"):
            raise ValueError(f"unknown patch op {op.op!r} for key {op.key!r}")
        last.pop(op.key, None)
        last[op.key] = op
    return list(last.values())


def batch_operations(run_id: str, ops: Sequence[PatchOp]) -> list[BatchOp]:
    """The transactional-batch operations for a context patch (upserts and deletes)."""
    result: list[BatchOp] = []
    for op in _collapse(ops):
        if op.op == "set":
            result.append(("upsert", (_ctx_item(run_id, op.key, op.value),)))
        else:
            result.append(("delete", (item_id("c", op.key),)))
    return result


def _chunks(operations: list[BatchOp]) -> Iterator[list[BatchOp]]:
    """Split batch operations into requests within the batch count and size limits."""
    chunk: list[BatchOp] = []
    size = 0
    for operation in operations:
        op_size = json_size(list(operation[1]))
        if chunk and (len(chunk) == MAX_BATCH_OPS or size + op_size > MAX_ITEM_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(operation)
        size += op_size
    if chunk:
        yield chunk


class CosmosContextStore:
    """A run's context and node outputs in Cosmos DB, one item per key and per output."""

    def __init__(
        self, client: CosmosClient, database: str = "flowcraft", container: str = "context",
        direct_requests: bool = True,
    ) -> None:
        self._container: ContainerProxy = ensure_container(
            client, database, container, "/runId", indexing_policy=CONTEXT_INDEXING, default_ttl=-1
        )
        #: Output creates signed here (`cosmos_direct`; None: every request through the SDK).
        self._direct = DirectCreates.for_container(client, self._container) if direct_requests else None
        #: Whether the server runs transactional batches of these operation kinds (None: not yet known).
        self._batch_supported: dict[frozenset[str], bool] = {}

    def create_run(self, run_id: str, initial: Mapping[str, Any]) -> None:
        """Write the initial keys once: a second call for the same run changes nothing."""
        items = [_ctx_item(run_id, key, value) for key, value in initial.items()]
        if not items:
            return
        operations = [("create", (item,)) for item in items]
        if self._run_batches(run_id, operations, conflict_ok=True):
            return
        for item in items:
            create_once(self._container, item)

    def get(self, run_id: str, key: str) -> Any:
        """The value under `key` (the later of its own write and the node's output), or MISSING; one query."""
        found = self._lookup(run_id, key)
        if found is None:
            return MISSING
        return found["output"] if found["kind"] == "out" else found["value"]

    def has(self, run_id: str, key: str) -> bool:
        """Whether `key` is present (as a key or as a node output)."""
        return self._lookup(run_id, key) is not None

    def set(self, run_id: str, key: str, value: Any) -> None:
        """Set one key: one upsert."""
        self._container.upsert_item(_ctx_item(run_id, key, value))

    def delete(self, run_id: str, key: str) -> None:
        """Delete one key (no error when absent)."""
        try:
            self._container.delete_item(item_id("c", key), partition_key=run_id)
        except CosmosResourceNotFoundError:
            return

    def patch(self, run_id: str, ops: Sequence[PatchOp]) -> None:
        """Apply set/delete operations: atomically per 100 on Cosmos DB, per key on the emulator."""
        operations = batch_operations(run_id, ops)
        if not operations or self._run_batches(run_id, operations, conflict_ok=False):
            return
        for name, args in operations:
            if name == "upsert":
                self._container.upsert_item(args[0])
            else:
                try:
                    self._container.delete_item(args[0], partition_key=run_id)
                except CosmosResourceNotFoundError:
                    continue

    def snapshot(self, run_id: str) -> dict[str, Any]:
        """The whole context, with each node's latest output under `_outputs.<id>` and `<id>`."""
        return _snapshot_of(self._run_items(run_id))

    def snapshot_and_outputs(self, run_id: str) -> tuple[dict[str, Any], list[RecordedOutput]]:
        """`snapshot` and `outputs` from one query over the run's partition."""
        items = list(self._run_items(run_id))
        return _snapshot_of(items), [_recorded(item) for item in items
                                     if item.get("kind") == "out" and not expired(item)]

    def record_output(
        self, run_id: str, node_id: str, iteration: int, output: Any, action: str | None = None,
        dynamic_nodes: Sequence[Mapping[str, Any]] = (), decision: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record (node, iteration) once with one create, its routing decision in the same item;
        False if it was already recorded."""
        item = {
            "id": _output_item_id(node_id, iteration), "runId": run_id, "kind": "out",
            "node": node_id, "iteration": iteration, "output": output, "action": action,
            "recordedAt": time.time(),
        }
        if dynamic_nodes:
            item["dynamicNodes"] = [dict(n) for n in dynamic_nodes]
        if decision is not None:
            item["decision"] = dict(decision)
        check_item_size(f"{_OUTPUTS_PREFIX}{node_id}", item, output)
        return _create_once(self._container, self._direct, item, run_id)

    def get_output(self, run_id: str, node_id: str, iteration: int) -> RecordedOutput | None:
        """The output recorded for (node, iteration), or None: one point read."""
        item = read_item_or_none(self._container, _output_item_id(node_id, iteration), run_id)
        return None if item is None or expired(item) else _recorded(item)

    def outputs(self, run_id: str) -> list[RecordedOutput]:
        """Every recorded output of the run: one query over its partition."""
        items = self._container.query_items(
            "SELECT * FROM c WHERE c.runId = @run AND c.kind = 'out'",
            parameters=[{"name": "@run", "value": run_id}], partition_key=run_id, max_item_count=1000,
        )
        return [_recorded(item) for item in items if not expired(item)]

    def delete_run(self, run_id: str) -> int:
        """Remove every item of the run (transactional batches of deletes where the server has them);
        return how many there were."""
        ids = self._run_ids(run_id)
        if not ids or self._run_batches(run_id, [("delete", (id_,)) for id_ in ids], conflict_ok=False):
            return len(ids)
        for id_ in ids:
            try:
                self._container.delete_item(id_, partition_key=run_id)
            except CosmosResourceNotFoundError:
                continue
        return len(ids)

    def count_items(self, run_id: str) -> int:
        """How many items the run has (context keys and recorded outputs, expired or not)."""
        return len(self._run_ids(run_id))

    def _run_ids(self, run_id: str) -> list[str]:
        """The ids of every item of the run: one query in its partition."""
        return [str(id_) for id_ in self._container.query_items(
            "SELECT VALUE c.id FROM c WHERE c.runId = @run",
            parameters=[{"name": "@run", "value": run_id}], partition_key=run_id,
        )]

    def expire_run(self, run_id: str, seconds: int) -> int:
        """Give every item of the run a per-item TTL of `seconds` from now; return how many got one.

        One query, then transactional batches of up to 100 patches (a 103-node run: 4 requests).
        A server that refuses transactional batches (the emulator, which has no TTL either) would
        need a request per item; there the items get no TTL and `purge` removes them.
        """
        if self._batch_supported.get(frozenset({"patch"})) is False:
            return 0
        ids = self._run_ids(run_id)
        operations = ttl_operations(ids, seconds)
        if not operations or self._run_batches(run_id, operations, conflict_ok=False):
            return len(operations)
        log.warning("Cosmos server has no transactional batch: items of finished runs get no TTL here; "
                    "`flowcraft-celery purge` removes them")
        return 0

    def _lookup(self, run_id: str, key: str) -> dict[str, Any] | None:
        """The item that answers for `key`: the node's latest output, else the key's own item."""
        rows = list(self._container.query_items(
            "SELECT TOP 2 * FROM c WHERE c.runId = @run AND (c.id = @cid OR "
            "(c.kind = 'out' AND c.node = @node)) ORDER BY c.iteration DESC",
            parameters=[
                {"name": "@run", "value": run_id},
                {"name": "@cid", "value": item_id("c", key)},
                {"name": "@node", "value": _output_node(key)},
            ],
            partition_key=run_id,
        ))
        rows = [r for r in rows if not expired(r)]
        own = next((r for r in rows if r.get("kind") == "ctx"), None)
        output = next((r for r in rows if r.get("kind") == "out"), None)
        if own is None or output is None:
            return own or output
        return own if _written(own) > _written(output) else output

    def _run_items(self, run_id: str) -> Iterable[dict[str, Any]]:
        """Every item of the run, fetched page by page from its one partition."""
        return cast(Iterable[dict[str, Any]], self._container.query_items(
            "SELECT * FROM c WHERE c.runId = @run",
            parameters=[{"name": "@run", "value": run_id}],
            partition_key=run_id, max_item_count=1000,
        ))

    def _run_batches(self, run_id: str, operations: list[BatchOp], conflict_ok: bool) -> bool:
        """Run `operations` as transactional batches; False if the server has no batch support.

        A delete (or patch) of an absent item fails a Cosmos batch with 404: that operation is
        dropped and the batch retried. With `conflict_ok`, a 409 (items already created) ends the call.
        """
        kinds = frozenset(operation[0] for operation in operations)
        supported = self._batch_supported.get(kinds)
        if supported is False:
            return False
        for chunk in _chunks(operations):
            pending = list(chunk)
            while pending:
                try:
                    self._container.execute_item_batch(pending, partition_key=run_id)
                except CosmosBatchOperationError as exc:
                    failed = pending[exc.error_index]
                    if exc.status_code == 404 and failed[0] in ("delete", "patch"):
                        pending.pop(exc.error_index)
                        continue
                    if exc.status_code == 409 and conflict_ok:
                        break
                    raise
                except CosmosHttpResponseError as exc:
                    if supported is None and exc.status_code in _BATCH_UNSUPPORTED:
                        log.warning(
                            "Cosmos server refused a transactional batch of %s (%s); such operations go "
                            "one request per item (atomic per item only) or are skipped (TTLs of items)",
                            "/".join(sorted(kinds)), exc.status_code,
                        )
                        self._batch_supported[kinds] = False
                        return False
                    raise
                self._batch_supported[kinds] = supported = True
                pending = []
        return True


def _pointer(field: str) -> str:
    """The JSON pointer of a top-level field (escaping `~` and `/`)."""
    return "/" + field.replace("~", "~0").replace("/", "~1")


def _strip(item: Mapping[str, Any]) -> RunStatusDoc:
    """A status item without Cosmos system properties."""
    return cast(RunStatusDoc, {k: v for k, v in item.items() if k not in _SYSTEM_FIELDS})


_FINAL_LIST = ", ".join(f"'{s}'" for s in sorted(FINAL_STATES))
_NOT_FINAL = f"FROM c WHERE NOT (c.status IN ({_FINAL_LIST}))"
#: Attempts at an ETag-conditional replace before giving up on a hot status document.
_REPLACE_ATTEMPTS = 20


class CosmosStatusStore:
    """One status item per run in Cosmos DB; final states are written once and never replaced.

    `deployment` names the deployment whose runs this store creates, lists and finds stalled.
    """

    def __init__(
        self, client: CosmosClient, database: str = "flowcraft", container: str = "runs",
        deployment: str = "", direct_requests: bool = True,
    ) -> None:
        self._container: ContainerProxy = ensure_container(
            client, database, container, "/runId", indexing_policy=RUNS_INDEXING, default_ttl=-1
        )
        self.deployment = deployment
        #: Status creates signed here (`cosmos_direct`; None: every request through the SDK).
        self._direct = DirectCreates.for_container(client, self._container) if direct_requests else None

    def create(self, doc: RunStatusDoc) -> None:
        """Write a new run's status item; a second create of the same run changes nothing."""
        now = time.time()
        item: dict[str, Any] = {"status": "running", "createdAt": now, "lastUpdated": now}
        item.update(doc)
        item["id"] = item_id("run", doc["runId"])
        item["deployment"] = self.deployment
        check_item_size("status", item, item)
        _create_once(self._container, self._direct, item, doc["runId"])

    def get(self, run_id: str) -> RunStatusDoc | None:
        """The run's status document, or None: one point read."""
        item = read_item_or_none(self._container, item_id("run", run_id), run_id)
        return None if item is None or expired(item) else _strip(item)


    def touch(self, run_id: str) -> None:
        """Set `lastUpdated` to now: one patch (a missing run is ignored)."""
        try:
            self._container.patch_item(
                item_id("run", run_id), run_id,
                [{"op": "set", "path": "/lastUpdated", "value": time.time()}],
            )
        except CosmosResourceNotFoundError:
            return

    def update(self, run_id: str, fields: Mapping[str, Any]) -> bool:
        """Set fields and `lastUpdated` unless the run is final; True if applied."""
        for name in ("id", "runId"):
            if name in fields:
                raise ValueError(f"status field {name!r} cannot be updated")
        changes = {**fields, "lastUpdated": time.time()}
        if len(changes) <= MAX_PATCH_OPS:
            return self._guarded_patch(run_id, changes) is not None
        return self._guarded_replace(run_id, changes)

    def finish(
        self, run_id: str, status: RunState, result: Mapping[str, Any] | None,
        errors: Sequence[Mapping[str, Any]], expire_after: int | None = None,
    ) -> RunStatusDoc | None:
        """Move the run to a final state once (with `expire_after`, its per-item TTL in the same
        patch); the document as finished for the call that did it (the patch's answer), else None."""
        if status not in FINAL_STATES:
            raise ValueError(f"{status!r} is not a final state ({sorted(FINAL_STATES)})")
        changes: dict[str, Any] = {
            "status": status, "result": dict(result) if result is not None else None,
            "errors": [dict(e) for e in errors], "wakeAt": None, "lastUpdated": time.time(),
        }
        if expire_after is not None:
            changes["ttl"] = expire_after
        check_item_size("result", changes, changes)
        item = self._guarded_patch(run_id, changes)
        if item is None:
            return None
        if not item:  # an account told to answer writes without their item
            item = read_item_or_none(self._container, item_id("run", run_id), run_id) or {"runId": run_id, **changes}
        return _strip(item)

    def record_sleep(self, run_id: str, node_token: str, wake_at: float) -> None:
        """One guarded patch of `/sleeping/<token>` and `/wakeAt` (the whole `/sleeping` for a
        document created without it)."""
        now = time.time()
        member = [{"op": "set", "path": f"/sleeping{_pointer(node_token)}", "value": wake_at}]
        whole = [{"op": "set", "path": "/sleeping", "value": {node_token: wake_at}}]
        common = [{"op": "set", "path": "/wakeAt", "value": wake_at},
                  {"op": "set", "path": "/lastUpdated", "value": now}]
        for operations in (member, whole):
            try:
                self._container.patch_item(item_id("run", run_id), run_id, operations + common,
                                           filter_predicate=_NOT_FINAL)
                return
            except (CosmosAccessConditionFailedError, CosmosResourceNotFoundError):
                return
            except CosmosHttpResponseError as exc:
                if exc.status_code != 400:
                    raise

    def live_page(self, page_size: int, continuation: str | None) -> tuple[list[RunStatusDoc], str | None]:
        """One page of this deployment's runs not final: a cross-partition query resumed from its
        continuation, so a sweep over many runs goes one bounded request at a time."""
        pager: Any = self._container.query_items(
            f"SELECT c.runId, c.lastUpdated, c.wakeAt FROM c WHERE c.deployment = @deployment "
            f"AND NOT (c.status IN ({_FINAL_LIST}))",
            parameters=[{"name": "@deployment", "value": self.deployment}],
            enable_cross_partition_query=True, max_item_count=page_size,
        ).by_page(continuation or None)
        page = [cast(RunStatusDoc, item) for item in next(pager, [])]
        return page, pager.continuation_token or None

    def list_runs(self, status: str | None = None, limit: int = 100) -> list[RunStatusDoc]:
        """This deployment's newest runs first, optionally only those in `status`."""
        where = "WHERE c.deployment = @deployment "
        parameters: list[dict[str, object]] = [{"name": "@deployment", "value": self.deployment}]
        if status is not None:
            where += "AND c.status = @status "
            parameters.append({"name": "@status", "value": status})
        rows = self._container.query_items(
            f"SELECT TOP {int(limit)} * FROM c {where}ORDER BY c.createdAt DESC",
            parameters=parameters, enable_cross_partition_query=True,
        )
        now = time.time()
        return [_strip(item) for item in rows if not expired(item, now)]

    def expire(self, run_id: str, seconds: int) -> None:
        """Give the run's status item a per-item TTL of `seconds` from now: one patch."""
        try:
            self._container.patch_item(
                item_id("run", run_id), run_id, [{"op": "set", "path": "/ttl", "value": seconds}],
            )
        except CosmosResourceNotFoundError:
            return

    def find_finished(self, before: float, page_size: int = 100) -> Iterator[RunStatusDoc]:
        """This deployment's final runs last updated before `before` (expired or not): a paged
        cross-partition query."""
        pages = self._container.query_items(
            "SELECT c.runId, c.blueprintId, c.status, c.lastUpdated FROM c WHERE c.deployment = @deployment "
            f"AND c.status IN ({_FINAL_LIST}) AND c.lastUpdated < @before",
            parameters=[{"name": "@deployment", "value": self.deployment}, {"name": "@before", "value": before}],
            enable_cross_partition_query=True, max_item_count=page_size,
        ).by_page()
        for page in pages:
            for item in page:
                yield cast(RunStatusDoc, item)

    def delete(self, run_id: str) -> bool:
        """Remove the run's status item; False if there was none."""
        try:
            self._container.delete_item(item_id("run", run_id), partition_key=run_id)
        except CosmosResourceNotFoundError:
            return False
        return True

    def count_by_status(self, statuses: Sequence[str]) -> dict[str, int]:
        """How many of this deployment's runs are in each of `statuses`: one COUNT query per
        status, answered from the index (the emulator has no GROUP BY)."""
        counts: dict[str, int] = {}
        for status in statuses:
            rows = self._container.query_items(
                "SELECT VALUE COUNT(1) FROM c WHERE c.deployment = @deployment AND c.status = @status",
                parameters=[{"name": "@deployment", "value": self.deployment}, {"name": "@status", "value": status}],
                enable_cross_partition_query=True,
            )
            counts[status] = sum(int(cast(Any, n)) for n in rows)
        return counts

    def _guarded_patch(self, run_id: str, changes: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """One patch of `changes`, applied only while the run is not final: the item as patched
        (the answer's body, empty when the account answers writes without it), None when not applied."""
        try:
            item: Mapping[str, Any] = self._container.patch_item(
                item_id("run", run_id), run_id,
                [{"op": "set", "path": _pointer(k), "value": v} for k, v in changes.items()],
                filter_predicate=_NOT_FINAL,
            )
        except (CosmosAccessConditionFailedError, CosmosResourceNotFoundError):
            return None
        return item

    def _guarded_replace(self, run_id: str, changes: Mapping[str, Any]) -> bool:
        """Read, merge and ETag-replace (for more fields than one patch may set)."""
        for _ in range(_REPLACE_ATTEMPTS):
            item = read_item_or_none(self._container, item_id("run", run_id), run_id)
            if item is None or item.get("status") in FINAL_STATES:
                return False
            item.update(changes)
            check_item_size("status", item, item)
            try:
                self._container.replace_item(
                    item["id"], item, etag=item["_etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except CosmosAccessConditionFailedError:
                continue
            return True
        raise RuntimeError(f"status of run {run_id!r} kept changing; update not applied")
