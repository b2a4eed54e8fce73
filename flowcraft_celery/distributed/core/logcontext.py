"""Every log line written while a node runs names its run, blueprint, node and iteration.

`node_log_scope` (a decorator of `NodeExecution.handle`) puts the node being handled on a
context variable for the duration of that handling (an inlined successor nests inside and
restores its predecessor after), and notes the node among those the current task handled.
`NodeLogFilter` copies the node onto every log record as the attributes `run_id`,
`blueprint_id`, `node_id` and `iteration` (JSON formatters pick them up as they are) and
`flowcraft`, a ready-made ` [run=… bp=… node=…@it]` for plain formats (empty outside a node).
The filter also escapes the record's arguments (`printable`: control characters escaped, long
values cut), so an id or value from a message can never forge a line or reach a terminal raw.
`install_on_celery_logging` attaches the filter to every handler Celery sets up for workers and
beat (root, task and multiprocessing loggers); the default `worker_log_format` of celeryconfig
shows `%(flowcraft)s`. When you configure
logging yourself, add `flowcraft_celery.distributed.core.logcontext.NodeLogFilter` to your handlers.
"""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from celery.signals import after_setup_logger, after_setup_task_logger

from flowcraft_celery.distributed.core.message import NodeMessage
from flowcraft_celery.model.ids import printable_id
from flowcraft_celery.model.printable import printable

#: How much of one log argument a line shows (a hostile id in the node prefix is cut shorter).
ARGUMENT_LIMIT = 300


@dataclass(frozen=True)
class NodeScope:
    """The node a log line belongs to."""

    run_id: str
    blueprint_id: str
    node_id: str
    iteration: int

    @property
    def token(self) -> str:
        """`node@iteration`, as the ledger names one node execution."""
        return f"{self.node_id}@{self.iteration}"

    def label(self) -> str:
        """The text plain log formats show."""
        return (f" [run={printable_id(self.run_id)} bp={printable_id(self.blueprint_id)} "
                f"node={printable_id(self.node_id)}@{self.iteration}]")


_current: contextvars.ContextVar[NodeScope | None] = contextvars.ContextVar("flowcraft_node", default=None)
_handled: contextvars.ContextVar[list[NodeScope] | None] = contextvars.ContextVar("flowcraft_handled",
                                                                                   default=None)

Method = TypeVar("Method", bound=Callable[..., Any])


def current_node() -> NodeScope | None:
    """The node being handled in this thread of execution, if any."""
    return _current.get()


def node_log_scope(handle: Method) -> Method:
    """Run a `NodeExecution` method with its node as the logging context (and note it handled)."""

    @functools.wraps(handle)
    def scoped(execution: Any, *args: Any, **kwargs: Any) -> Any:
        scope = NodeScope(str(execution.run_id), str(execution.msg.blueprint_id), str(execution.node_id),
                          int(execution.iteration))
        handled = _handled.get()
        if handled is not None:
            handled.append(scope)
        reset = _current.set(scope)
        try:
            return handle(execution, *args, **kwargs)
        finally:
            _current.reset(reset)

    return scoped  # type: ignore[return-value]


def start_task_record() -> list[NodeScope]:
    """Begin noting the nodes the current task handles; returns the list that fills up."""
    handled: list[NodeScope] = []
    _handled.set(handled)
    return handled


class NodeLogFilter(logging.Filter):
    """Adds `run_id`, `blueprint_id`, `node_id`, `iteration` and `flowcraft` to every record, and
    escapes its text arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate the record (never drops one)."""
        if not getattr(record, "flowcraft_escaped", False):  # several handlers share one record
            record.args = _escaped_arguments(record.args)
            record.flowcraft_escaped = True
        scope = _current.get()
        record.run_id = printable_id(scope.run_id) if scope else None
        record.blueprint_id = printable_id(scope.blueprint_id) if scope else None
        record.node_id = printable_id(scope.node_id) if scope else None
        record.iteration = scope.iteration if scope else None
        record.flowcraft = scope.label() if scope else ""
        return True


class _Shown:
    """A log argument as `%s` and `%r` print it: made printable (escaped, cut)."""

    def __init__(self, value: str | BaseException) -> None:
        self.value = value

    def __str__(self) -> str:
        return printable(str(self.value), ARGUMENT_LIMIT)

    def __repr__(self) -> str:
        return printable(repr(self.value), ARGUMENT_LIMIT)


def _escaped_arguments(args: Any) -> Any:
    """A record's `%` arguments with each text or exception shown printable."""
    def safe(value: Any) -> Any:
        return _Shown(value) if isinstance(value, (str, BaseException)) else value

    if isinstance(args, tuple):
        return tuple(safe(value) for value in args)
    if isinstance(args, Mapping):
        return {key: safe(value) for key, value in args.items()}
    return args


def add_filter(logger: logging.Logger) -> None:
    """Attach one `NodeLogFilter` to each handler of `logger` (again: no second copy)."""
    for handler in logger.handlers:
        if not any(isinstance(f, NodeLogFilter) for f in handler.filters):
            handler.addFilter(NodeLogFilter())


def _on_logger_setup(logger: logging.Logger | None = None, **_: Any) -> None:
    """Celery set up `logger` (root or task logger); the multiprocessing logger shares the format."""
    from celery.utils.log import get_multiprocessing_logger

    for configured in (logger, get_multiprocessing_logger()):
        if configured is not None:
            add_filter(configured)


def install_on_celery_logging() -> None:
    """Filter the handlers Celery configures (worker, beat, their pool processes)."""
    after_setup_logger.connect(_on_logger_setup, weak=False, dispatch_uid="flowcraft-node-log")
    after_setup_task_logger.connect(_on_logger_setup, weak=False, dispatch_uid="flowcraft-node-task-log")


def task_summary(members: Sequence[NodeMessage], handled: list[NodeScope]) -> dict[str, Any]:
    """A node task's small Celery result: its run and the nodes it handled (inlined ones too)."""
    run_id = members[0].run_id
    nodes = [s.token for s in handled if s.run_id == run_id] or [m.token for m in members]
    return {"run": run_id, "blueprint": members[0].blueprint_id, "nodes": nodes,
            "show": f"flowcraft-celery show {run_id}"}
