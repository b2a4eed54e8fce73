"""Built-in node types (SPEC §6): the pure parts, shared by the local runner and the bridge.

`loop-controller`, `batch-scatter` and `batch-gather` are ordinary nodes registered in
`BUILTIN_REGISTRY`. `sleep`, `wait`, `webhook` and `subflow` change how a run moves (a timer,
an external event, a child run), so each runner handles them; the parsing they need is here.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.registry import NodeResult, Registry
from flowcraft_celery.engine.semantics import loop_controller_result, output_key
from flowcraft_celery.model.graph import Graph
from flowcraft_celery.stores.base import MISSING

#: Built-ins that each runner executes itself rather than through the registry.
RUNNER_BUILTINS = frozenset({"sleep", "wait", "webhook", "subflow"})
#: Built-ins that put the run in `awaiting` until `resume`.
AWAITING_BUILTINS = frozenset({"wait", "webhook"})



#: How deep subflows may nest (a run inside a run inside ...) before the run fails.
DEFAULT_SUBFLOW_DEPTH = 10
#: Where webhook URLs point unless configured (`flowcraft_webhook_base_url`).
DEFAULT_WEBHOOK_BASE_URL = "http://127.0.0.1:8080/webhooks"


def subflow_depth_message(node_id: str, child_blueprint: str, limit: int) -> str:
    """Why a subflow node failed at the depth limit."""
    return (f"subflow node {node_id!r} would start blueprint {child_blueprint!r} {limit + 1} runs deep, over the "
            f"subflow depth limit of {limit} (FLOWCRAFT_SUBFLOW_DEPTH)")


def new_webhook_secret() -> str:
    """An unguessable token for one webhook node execution."""
    return secrets.token_urlsafe(32)


def webhook_url(base: str, run_id: str, node_id: str, iteration: int, secret: str) -> str:
    """The URL an HTTP POST resumes the webhook node at: `<base>/<run>/<node>/<iteration>/<token>`."""
    parts = [quote(run_id, safe=""), quote(node_id, safe=""), str(iteration), secret]
    return "/".join([base.rstrip("/"), *parts])


def webhook_secret_matches(url: str, secret: str) -> bool:
    """Whether `secret` is the token at the end of a webhook's URL (compared in constant time)."""
    return hmac.compare_digest(url.rsplit("/", 1)[-1].encode(), secret.encode())


def webhook_key(node_id: str) -> str:
    """The context key holding a waiting webhook node's URL."""
    return f"_webhooks.{node_id}"


def webhook_output(url: str, body: Any) -> dict[str, Any]:
    """A webhook node's output once resumed: its URL and the request's JSON body."""
    return {"url": url, "body": body}


def loop_controller(ctx: NodeContext) -> NodeResult:
    """`continue` while `params.condition` holds against the context, else `break`."""
    condition = ctx.params.get("condition")
    if not isinstance(condition, str):
        raise ValueError(f"loop-controller {ctx.node_id!r} needs params.condition (an expression)")

    def lookup(key: str) -> Any:
        return ctx.context.get(key, MISSING)

    return loop_controller_result(condition, lookup)


def batch_scatter(ctx: NodeContext) -> NodeResult:
    """One dynamic worker node per input item, each wired into the gather node.

    With `chunkSize`, items run in waves of that many: each node of a wave waits for every
    node of the wave before it.
    """
    items = ctx.input
    if not isinstance(items, list):
        raise ValueError(f"batch-scatter {ctx.node_id!r}: input must be an array, got {type(items).__name__}")
    uses = ctx.params.get("workerUsesKey")
    gather = ctx.params.get("gatherNodeId")
    if not isinstance(uses, str) or not isinstance(gather, str):
        raise ValueError(f"batch-scatter {ctx.node_id!r} needs params.workerUsesKey and params.gatherNodeId")
    chunk = ctx.params.get("chunkSize")
    if chunk is not None and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1):
        raise ValueError(f"batch-scatter {ctx.node_id!r}: params.chunkSize must be a positive integer, got {chunk!r}")
    workers = [f"{ctx.node_id}_{i}" for i in range(len(items))]
    nodes: list[dict[str, Any]] = [{"id": w, "uses": uses, "input": item}
                                   for w, item in zip(workers, items, strict=True)]
    if chunk:
        for i in range(chunk, len(nodes)):
            wave_start = (i // chunk - 1) * chunk
            nodes[i]["after"] = workers[wave_start:wave_start + chunk]
    return NodeResult(output={"gatherNodeId": gather, "workers": workers}, dynamic_nodes=nodes)


def batch_gather(ctx: NodeContext) -> NodeResult:
    """The workers' outputs in item order, also written to `context[outputKey]`."""
    arrivals = ctx.input if isinstance(ctx.input, dict) else {}
    order: list[str] = []
    scattered = False
    for value in arrivals.values():
        if isinstance(value, dict) and value.get("gatherNodeId") == ctx.node_id:
            scattered = True
            order += [w for w in value.get("workers", []) if isinstance(w, str)]
    if not scattered:
        order = sorted(arrivals, key=_item_index)
    outputs = [arrivals.get(w) for w in order]
    ctx.context.set(str(ctx.params.get("outputKey") or ctx.node_id), outputs)
    return NodeResult(output=outputs)


def _item_index(worker_id: str) -> int:
    """The item index a worker id ends with (`scatter_12` -> 12)."""
    tail = worker_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def subflow_initial_context(params: Mapping[str, Any], node_input: Any,
                            lookup_parent: Any) -> tuple[dict[str, Any], bool]:
    """A child run's initial context, and whether the node's input goes to the child's starts.

    With `params.inputs` (`{childKey: parentKey}`) parent values are copied; without it the
    node's input is handed to each child start node.
    """
    mapping = params.get("inputs")
    if not isinstance(mapping, Mapping):
        return {}, True
    initial: dict[str, Any] = {}
    for child_key, parent_key in mapping.items():
        value = lookup_parent(str(parent_key))
        if value is not MISSING:
            initial[str(child_key)] = value
    return initial, False


def subflow_failure(child_run: str, status: Any, errors: Iterable[Mapping[str, Any]]) -> str:
    """The error message of a subflow node whose child run did not complete."""
    detail = "; ".join(str(e.get("message", "")) for e in errors) or str(status)
    return f"subflow {child_run} {status}: {detail}"


def subflow_output(params: Mapping[str, Any], child_graph: Graph,
                   child_context: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The subflow node's output and the parent keys to set from the child's final state.

    With `params.outputs` (`{parentKey: childKey or child node id}`) those values are copied
    back and the output is the child's final context; without it the output is the single
    terminal node's output, or `{terminalId: output}` for several.
    """
    terminal_outputs = {
        n: child_context[output_key(n)] for n in child_graph.nodes
        if not child_graph.out_edges.get(n) and output_key(n) in child_context
    }
    mapping = params.get("outputs")
    if isinstance(mapping, Mapping):
        copies: dict[str, Any] = {}
        for parent_key, child_key in mapping.items():
            key = str(child_key)
            for candidate in (key, f"_outputs.{key}"):
                if candidate in child_context:
                    copies[str(parent_key)] = child_context[candidate]
                    break
        return dict(child_context), copies
    if len(terminal_outputs) == 1:
        return next(iter(terminal_outputs.values())), {}
    return dict(terminal_outputs), {}


BUILTIN_REGISTRY = Registry()
BUILTIN_REGISTRY.register("loop-controller", loop_controller)
BUILTIN_REGISTRY.register("batch-scatter", batch_scatter)
BUILTIN_REGISTRY.register("batch-gather", batch_gather)
