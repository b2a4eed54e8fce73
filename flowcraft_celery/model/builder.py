"""A fluent way to write blueprints in Python: `Flow("id").node(...).edge(...).build()`."""

from __future__ import annotations

import itertools
from typing import Any

from flowcraft_celery.model.blueprint import Blueprint, EdgeDefinition, NodeConfig, NodeDefinition


class Flow:
    """Collects nodes and edges, then builds a `Blueprint` (validated when a run starts)."""

    def __init__(self, blueprint_id: str, **metadata: Any) -> None:
        self._id = blueprint_id
        self._nodes: list[NodeDefinition] = []
        self._edges: list[EdgeDefinition] = []
        self._metadata = dict(metadata)

    def node(
        self,
        node_id: str,
        uses: str | None = None,
        *,
        params: dict[str, Any] | None = None,
        inputs: str | dict[str, str] | None = None,
        max_retries: int | None = None,
        retry_delay: float | None = None,
        timeout: float | None = None,
        fallback: str | None = None,
        join: str | None = None,
        queue: str | None = None,
    ) -> Flow:
        """Add a node; `uses` defaults to the node id. Times are milliseconds, as in JSON."""
        config = NodeConfig(max_retries=max_retries, retry_delay=retry_delay, timeout=timeout,
                            fallback=fallback, join_strategy=join, queue=queue)
        self._nodes.append(NodeDefinition(node_id, uses or node_id, dict(params or {}), inputs, config))
        return self

    def edge(
        self,
        source: str,
        target: str,
        *,
        action: str | None = None,
        condition: str | None = None,
        transform: str | None = None,
    ) -> Flow:
        """Add an edge, optionally gated by an action and/or a condition."""
        self._edges.append(EdgeDefinition(source, target, action, condition, transform))
        return self

    def chain(self, *node_ids: str) -> Flow:
        """Add plain edges linking the nodes in order."""
        for source, target in itertools.pairwise(node_ids):
            self.edge(source, target)
        return self

    def build(self) -> Blueprint:
        """The blueprint (a copy: building again gives an equal, independent one)."""
        return Blueprint.from_dict(Blueprint(self._id, self._nodes, self._edges, self._metadata).to_dict())
