"""Calling a node implementation for one attempt: functions, coroutines, class lifecycles, timeouts.

Shared by the local runner and the Celery bridge; retries between attempts are theirs (a
loop with a pause locally, a task retry with a countdown on Celery). A class node's `prep`
runs at the start of every attempt, `post` after the successful one; an error in either is
fatal (not retried), as only `exec` is retried; `prep` runs once per node execution, its
value handed from a failed attempt to the next. What an exception means is decided by
`stores.faults.classify`: an infrastructure error (a store unreachable inside `ctx.context`)
is not an attempt and propagates to the runner; a permanent error (a value the store cannot
hold) fails the attempt without retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Callable
from typing import Any

from flowcraft_celery.engine.context import NodeContext
from flowcraft_celery.engine.registry import Implementation, Node, NodeResult
from flowcraft_celery.errors import FlowcraftError
from flowcraft_celery.model.json_values import NotJsonError, check_json
from flowcraft_celery.stores.base import MISSING
from flowcraft_celery.stores.faults import classify


class NodeAttemptError(FlowcraftError):
    """An attempt failed; `retriable` is False for failures outside `exec` (prep, post)."""

    def __init__(self, node_id: str, attempt: int, cause: BaseException | str,
                 retriable: bool = True, prepared: Any = MISSING) -> None:
        message = cause if isinstance(cause, str) else (str(cause) or type(cause).__name__)
        super().__init__(message)
        self.node_id = node_id
        self.attempt = attempt
        self.message = message
        self.retriable = retriable
        self.cause = cause if isinstance(cause, BaseException) else None
        #: A class node's `prep` result, handed to the next attempt so `prep` runs once.
        self.prepared = prepared

    def to_record(self) -> dict[str, Any]:
        """The JSON error record kept in the run's result (`errors`)."""
        kind = type(self.cause).__name__ if self.cause is not None else "NodeError"
        return {"nodeId": self.node_id, "message": self.message, "attempt": self.attempt, "type": kind}


class NodeTimeoutError(FlowcraftError, TimeoutError):
    """An attempt ran longer than the node's `config.timeout`."""


def instantiate(impl: Implementation) -> Callable[[NodeContext], Any] | Node:
    """A callable function node, or an instance of a class node."""
    if isinstance(impl, type) and issubclass(impl, Node):
        return impl()
    return impl


def run_attempt(impl: Implementation, ctx: NodeContext, timeout: float | None,
                prepared: Any = MISSING) -> NodeResult:
    """Run one attempt; raise NodeAttemptError on failure (a returned `error` included).

    A class node's `prep` runs only when `prepared` (the value an earlier attempt's error
    carried) is not given.
    """
    target = instantiate(impl)
    if isinstance(target, Node):
        node = target
        if prepared is MISSING:
            try:
                prepared = node.prep(ctx)
            except Exception as exc:
                _pass_infrastructure(exc)
                _recover(node, exc, ctx)
                raise NodeAttemptError(ctx.node_id, ctx.attempt, exc, retriable=False) from exc
        try:
            raw = _guarded(lambda: node.exec(prepared, ctx), ctx, timeout)
        except NodeAttemptError as error:
            error.prepared = prepared
            raise
        try:
            result = NodeResult.of(_resolve(node.post(raw, ctx)))
        except Exception as exc:
            _pass_infrastructure(exc)
            _recover(node, exc, ctx)
            raise NodeAttemptError(ctx.node_id, ctx.attempt, exc, retriable=False) from exc
    else:
        function = target
        result = NodeResult.of(_guarded(lambda: function(ctx), ctx, timeout))
    if result.error:
        raise NodeAttemptError(ctx.node_id, ctx.attempt, result.error)
    return checked(result, ctx)


def checked(result: NodeResult, ctx: NodeContext) -> NodeResult:
    """The result if its output is exact JSON; else a failure no retry can fix."""
    try:
        check_json(result.output, f"output of node {ctx.node_id!r}")
    except NotJsonError as exc:
        raise NodeAttemptError(ctx.node_id, ctx.attempt, exc, retriable=False) from exc
    return result


def run_fallback(impl: Implementation, error: NodeAttemptError, ctx: NodeContext) -> NodeResult | None:
    """A class node's own `fallback()` after the last attempt: its result, or None if it re-raised."""
    target = instantiate(impl)
    if not isinstance(target, Node):
        return None
    if type(target).fallback is Node.fallback:
        if error.retriable:  # prep/post failures were given to recover() where they happened
            _recover(target, error.cause or error, ctx)
        return None
    try:
        result = NodeResult.of(_resolve(target.fallback(error.cause or error, ctx)))
        check_json(result.output, f"output of node {ctx.node_id!r} (its fallback)")
    except Exception as exc:
        _pass_infrastructure(exc)
        _recover(target, exc, ctx)
        return None
    return result


def _pass_infrastructure(exc: Exception) -> None:
    """Re-raise an infrastructure error: it is the runner's to retry, not the node's failure."""
    if classify(exc) == "infrastructure":
        raise exc


def _recover(node: Node, error: BaseException, ctx: NodeContext) -> None:
    """Give a class node its cleanup call; a failing `recover` must not hide the first error."""
    with contextlib.suppress(Exception):
        node.recover(error, ctx)


def _resolve(value: Any) -> Any:
    """Await a coroutine returned by `post`/`fallback`; pass other values through."""
    return asyncio.run(value) if inspect.iscoroutine(value) else value


def _guarded(call: Callable[[], Any], ctx: NodeContext, timeout: float | None) -> Any:
    """Call with the timeout enforced, turning the node's exceptions into a NodeAttemptError
    (not retriable when no retry can fix it); infrastructure errors pass through."""
    try:
        return _call_with_timeout(call, ctx, timeout)
    except NodeAttemptError:
        raise
    except NotJsonError as exc:  # a context write no retry can fix
        raise NodeAttemptError(ctx.node_id, ctx.attempt, exc, retriable=False) from exc
    except Exception as exc:
        kind = classify(exc)
        if kind == "infrastructure":
            raise
        raise NodeAttemptError(ctx.node_id, ctx.attempt, exc, retriable=kind != "permanent") from exc


def _call_with_timeout(call: Callable[[], Any], ctx: NodeContext, timeout: float | None) -> Any:
    """Run `call` (awaiting a coroutine result); past `timeout` seconds raise NodeTimeoutError.

    A coroutine is cancelled at the deadline; a blocking function keeps its thread until it
    returns, with `ctx.cancelled` set so cooperative code can stop early.
    """
    if timeout is None:
        return _resolve(call())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            value = call()
            if inspect.iscoroutine(value):
                value = asyncio.run(asyncio.wait_for(value, timeout))
            box["value"] = value
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"node-{ctx.node_id}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive() or isinstance(box.get("error"), (asyncio.TimeoutError, TimeoutError)):
        ctx.cancelled.set()
        limit_ms = int(timeout * 1000)
        raise NodeTimeoutError(f"node {ctx.node_id!r} attempt {ctx.attempt} exceeded its timeout of {limit_ms} ms")
    if "error" in box:
        raise box["error"]
    return box.get("value")
