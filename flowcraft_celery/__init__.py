"""flowcraft-celery: Flowcraft-style workflow graphs run on Celery.

The public API is one import away: `from flowcraft_celery import Flow, node, Node, NodeContext,
NodeResult, Client`. `celery -A flowcraft_celery worker` finds the Celery app as the attribute
`app`. `app` and `Client` are created on first access, so the model, the engine and the local
runner import without Celery. The layers, lowest first, are the subpackages `expressions`,
`model`, `stores`, `engine`, `backends`, `local`, `distributed`, `devtools` and `cli`; see
docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

from flowcraft_celery.engine.context import NodeContext, RunContext
from flowcraft_celery.engine.registry import Node, NodeResult, node
from flowcraft_celery.model.builder import Flow

__all__ = ["Client", "Flow", "Node", "NodeContext", "NodeResult", "RunContext", "app", "node"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "app":
        from flowcraft_celery.distributed.app import app

        return app
    if name == "Client":
        from flowcraft_celery.distributed.client import Client

        return Client
    raise AttributeError(f"module 'flowcraft_celery' has no attribute {name!r}")
