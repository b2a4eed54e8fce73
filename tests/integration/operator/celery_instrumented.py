"""What a user adds to enable Celery's own OpenTelemetry instrumentation in every pool process
(the tracing test checks that our spans compose with it)."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init
from opentelemetry.instrumentation.celery import CeleryInstrumentor


@worker_process_init.connect(weak=False)
def _instrument(**_: Any) -> None:
    CeleryInstrumentor().instrument()
