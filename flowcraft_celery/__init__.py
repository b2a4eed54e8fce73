"""flowcraft-celery: Flowcraft-style workflow graphs run on Celery.

`celery -A flowcraft_celery worker` finds the Celery app as the attribute `app`; it is
created on first access so that the model, engine and local runner import without Celery.
"""

from __future__ import annotations

from typing import Any

from flowcraft_celery.builder import Flow
from flowcraft_celery.context import NodeContext, RunContext
from flowcraft_celery.registry import Node, NodeResult, node

__all__ = ["Flow", "Node", "NodeContext", "NodeResult", "RunContext", "app", "node"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "app":
        from flowcraft_celery.app import app

        return app
    raise AttributeError(f"module 'flowcraft_celery' has no attribute {name!r}")
