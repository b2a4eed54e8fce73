"""OpenTelemetry traces of runs: one trace per run, a span per node execution, carried in task headers.

Off unless OpenTelemetry is installed (`pip install 'flowcraft-celery[otel]'`) and configured
with its standard variables: `OTEL_TRACES_EXPORTER` (`otlp`, `console`, ...) or an OTLP endpoint
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), `OTEL_SDK_DISABLED=true`
turning it off again. Each process sets up its tracer provider as it starts (`set_up`, on
Celery's worker, pool process and beat start signals) or on first use, exporting with
`BatchSpanProcessor` (`OTEL_BSP_*`) and the exporter the variables name; `otlp` is OTLP over HTTP
unless `OTEL_EXPORTER_OTLP_PROTOCOL` says `grpc`. A provider someone set up already
(`opentelemetry-instrument`, the application) is used as it is.

`span(...)` opens a span as a child of the current one, or of the W3C trace context in a task
message's headers when there is none. `inject(headers)` is connected to Celery's
`before_task_publish`, so every message a span publishes carries its `traceparent`: the start
span is a run's root, each node execution's span the parent of those it triggers. With
`opentelemetry-instrumentation-celery` enabled, its publish and run spans sit in between.
Without OpenTelemetry every function here is a no-op costing one check.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any

from celery.exceptions import Reject, Retry

try:
    from opentelemetry import propagate, trace
except ImportError:  # the `otel` extra is not installed: tracing stays off
    propagate = trace = None  # type: ignore[assignment]

logger = logging.getLogger("flowcraft.tracing")

#: The instrumentation scope of our spans.
SCOPE = "flowcraft_celery"
#: Exceptions that are Celery's control flow (a retry, a rejection), not a failed span.
CONTROL_FLOW = (Retry, Reject)

_lock = threading.Lock()
_ready: dict[int, bool] = {}


def _wanted(env: Mapping[str, str]) -> bool:
    """Whether the standard variables ask for traces."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def _exporter(name: str, env: Mapping[str, str]) -> Any:
    """The span exporter registered under `name` (`otlp` picks HTTP or gRPC by protocol)."""
    if name == "otlp":
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
        name = "otlp_proto_grpc" if protocol.strip().lower() == "grpc" else "otlp_proto_http"
    found = list(entry_points(group="opentelemetry_traces_exporter", name=name))
    if not found:
        raise ValueError(f"OTEL_TRACES_EXPORTER names {name!r}, which no installed package provides")
    return found[0].load()()


def _set_up(env: Mapping[str, str]) -> bool:
    """Give this process a tracer provider exporting as the variables say; whether spans are recorded."""
    if trace is None or not _wanted(env):
        return False
    sdk_trace = importlib.import_module("opentelemetry.sdk.trace")
    if isinstance(trace.get_tracer_provider(), sdk_trace.TracerProvider):
        return True  # set up by the application or `opentelemetry-instrument` (inherited over fork too)
    resources = importlib.import_module("opentelemetry.sdk.resources")
    export = importlib.import_module("opentelemetry.sdk.trace.export")
    named = "service.name" in env.get("OTEL_RESOURCE_ATTRIBUTES", "") or env.get("OTEL_SERVICE_NAME")
    provider = sdk_trace.TracerProvider(resource=resources.Resource.create(
        {} if named else {"service.name": "flowcraft-celery"}))
    names = [n.strip() for n in (env.get("OTEL_TRACES_EXPORTER") or "otlp").lower().split(",") if n.strip()]
    for name in names:
        provider.add_span_processor(export.BatchSpanProcessor(_exporter(name, env)))
    trace.set_tracer_provider(provider)
    return True


def enabled() -> bool:
    """Whether this process records spans (set up on the first call in each process)."""
    pid = os.getpid()
    if pid not in _ready:
        with _lock:
            if pid not in _ready:
                try:
                    _ready[pid] = _set_up(os.environ)
                except Exception as exc:  # a bad setting must not stop a worker: no traces, one warning
                    logger.warning("tracing is off: %s", exc)
                    _ready[pid] = False
    return _ready[pid]


@contextlib.contextmanager
def span(name: str, attributes: Mapping[str, Any], headers: Mapping[str, Any] | None = None) -> Iterator[None]:
    """A span around the block: a child of the current span, else of the trace context in
    `headers` (a task message's), else a new trace's root. An exception other than Celery's
    control flow marks it failed."""
    if not enabled():
        yield
        return
    parent = None
    if headers is not None and not trace.get_current_span().get_span_context().is_valid:
        parent = propagate.extract({k: str(v) for k, v in headers.items() if v is not None})
    tracer = trace.get_tracer(SCOPE)
    with tracer.start_as_current_span(name, context=parent, attributes={k: v for k, v in attributes.items()
                                                                         if v is not None},
                                      record_exception=False, set_status_on_exception=False) as current:
        try:
            yield
        except CONTROL_FLOW:
            raise
        except BaseException as exc:
            current.record_exception(exc)
            current.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:200]))
            raise


def set_attributes(attributes: Mapping[str, Any]) -> None:
    """Add attributes to the current span (a reconcile pass's counts)."""
    if enabled():
        trace.get_current_span().set_attributes({k: v for k, v in attributes.items() if v is not None})


def message_context(request: Any) -> dict[str, Any]:
    """The W3C trace context a task message carried (its `traceparent` and `tracestate` headers)."""
    return {key: getattr(request, key, None) for key in ("traceparent", "tracestate")}


def inject(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Put the current span's trace context into a message's headers (Celery's `before_task_publish`)."""
    if headers is not None and enabled() and trace.get_current_span().get_span_context().is_valid:
        propagate.inject(headers)


def set_up(**_: Any) -> None:
    """Set tracing up as a process starts (a pool process, beat), before instrumentation a user
    enables there asks for the tracer provider."""
    enabled()


def flush(**_: Any) -> None:
    """Export what this process's spans still hold (a pool process that is about to exit)."""
    if enabled():
        provider = trace.get_tracer_provider()
        force_flush = getattr(provider, "force_flush", None)
        if force_flush is not None:
            force_flush(5000)
