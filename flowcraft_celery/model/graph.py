"""The static shape of a run's graph: edges by node, predecessors, cycles and loop heads.

Built once per blueprint (plus the dynamic nodes a run added) and shared by the engine's
decisions; it holds no run state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from flowcraft_celery.model.blueprint import Blueprint, EdgeDefinition, NodeDefinition, parse_node

LOOP_CONTROLLER = "loop-controller"


@dataclass(frozen=True)
class DynamicAddition:
    """Nodes a result added to this run: each wired from `parent` (and into `gather`).

    A node definition may carry (our extensions) `input`: its fixed input, instead of the
    parent's output; and `after`: ids of earlier dynamic nodes it waits for (an `all` join),
    instead of starting right after the parent.
    """

    parent: str
    nodes: tuple[NodeDefinition, ...]
    gather: str | None = None

    @classmethod
    def from_result(cls, parent: str, nodes: list[dict[str, Any]], output: Any) -> DynamicAddition:
        """Parse a result's `dynamicNodes`; a `gatherNodeId` in its output names the gather node."""
        gather = output.get("gatherNodeId") if isinstance(output, dict) else None
        parsed = tuple(parse_node(n, f"{parent}.dynamicNodes[{i}]") for i, n in enumerate(nodes))
        return cls(parent, parsed, gather if isinstance(gather, str) else None)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, for storing a run's additions."""
        return {"parent": self.parent, "gather": self.gather, "nodes": [n.to_dict() for n in self.nodes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DynamicAddition:
        """Inverse of `to_dict`."""
        return cls.from_result(data["parent"], data["nodes"], {"gatherNodeId": data.get("gather")})


@dataclass
class Graph:
    """A blueprint's graph with its derived indexes; `extend` adds a run's dynamic nodes."""

    blueprint: Blueprint
    additions: tuple[DynamicAddition, ...] = ()
    nodes: dict[str, NodeDefinition] = field(init=False)
    edges: list[EdgeDefinition] = field(init=False)
    fixed_inputs: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.nodes = {n.id: n for n in self.blueprint.nodes}
        self.edges = list(self.blueprint.edges)
        self.fixed_inputs = {}
        for addition in self.additions:
            for definition in addition.nodes:
                self.nodes[definition.id] = definition
                if "input" in definition.extra:
                    self.fixed_inputs[definition.id] = definition.extra["input"]
                after = definition.extra.get("after")
                sources = after if isinstance(after, list) and after else [addition.parent]
                self.edges += [EdgeDefinition(source=str(source), target=definition.id) for source in sources]
                if addition.gather:
                    self.edges.append(EdgeDefinition(source=definition.id, target=addition.gather))

    def extend(self, additions: Iterable[DynamicAddition]) -> Graph:
        """A new graph with more dynamic nodes (already-known additions are not repeated)."""
        new = tuple(a for a in additions if a not in self.additions)
        return self if not new else Graph(self.blueprint, self.additions + new)

    @cached_property
    def out_edges(self) -> dict[str, list[EdgeDefinition]]:
        """Outgoing edges by source node, in blueprint order."""
        out: dict[str, list[EdgeDefinition]] = {n: [] for n in self.nodes}
        for edge in self.edges:
            out.setdefault(edge.source, []).append(edge)
        return out

    @cached_property
    def in_edges(self) -> dict[str, list[EdgeDefinition]]:
        """Incoming edges by target node, in blueprint order."""
        out: dict[str, list[EdgeDefinition]] = {n: [] for n in self.nodes}
        for edge in self.edges:
            out.setdefault(edge.target, []).append(edge)
        return out

    def predecessors(self, node_id: str) -> list[str]:
        """Distinct sources of the node's incoming edges, in order."""
        return list(dict.fromkeys(e.source for e in self.in_edges.get(node_id, [])))

    @cached_property
    def fallback_for(self) -> dict[str, str]:
        """Fallback node id -> the node whose `config.fallback` names it."""
        return {n.config.fallback: n.id for n in self.nodes.values() if n.config.fallback}

    @cached_property
    def components(self) -> dict[str, int]:
        """Cycle membership: node id -> index of its strongly connected cycle (acyclic nodes absent)."""
        return _cyclic_components(self.nodes, self.out_edges)

    def same_cycle(self, a: str, b: str) -> bool:
        """Whether both nodes lie on one cycle."""
        ca = self.components.get(a)
        return ca is not None and ca == self.components.get(b)

    @cached_property
    def loop_heads(self) -> frozenset[str]:
        """Each cycle's entry: its loop-controller, else `metadata.cycleEntryPoints`, else an
        entered node, else its first node."""
        entry_points = self.blueprint.metadata.get("cycleEntryPoints") or []
        members: dict[int, list[str]] = {}
        for node_id in self.nodes:
            if node_id in self.components:
                members.setdefault(self.components[node_id], []).append(node_id)
        heads: set[str] = set()
        for group in members.values():
            chosen = [n for n in group if self.nodes[n].uses == LOOP_CONTROLLER]
            chosen = chosen or [n for n in group if n in entry_points]
            chosen = chosen or [
                n for n in group if any(not self.same_cycle(p, n) for p in self.predecessors(n))
            ]
            heads.update(chosen or group[:1])
        return frozenset(heads)

    def is_back_edge(self, edge: EdgeDefinition) -> bool:
        """An edge from inside a cycle to that cycle's head: taking it starts a new iteration."""
        return edge.target in self.loop_heads and self.same_cycle(edge.source, edge.target)

    def is_exit_edge(self, edge: EdgeDefinition) -> bool:
        """An edge leaving a cycle."""
        return edge.source in self.components and not self.same_cycle(edge.source, edge.target)

    def exit_edges(self, node_id: str) -> list[EdgeDefinition]:
        """Every edge leaving the cycle that `node_id` belongs to."""
        return [e for e in self.edges if self.same_cycle(e.source, node_id) and self.is_exit_edge(e)]

    def join_predecessors(self, node_id: str, iteration: int) -> list[str]:
        """Predecessors a node waits for: a loop head waits for outside arrivals on its first
        iteration and for in-cycle arrivals on later ones."""
        preds = self.predecessors(node_id)
        if node_id not in self.loop_heads:
            return preds
        inside = [p for p in preds if self.same_cycle(p, node_id)]
        outside = [p for p in preds if not self.same_cycle(p, node_id)]
        return (outside or preds) if iteration == 0 else (inside or preds)


def _cyclic_components(nodes: Mapping[str, Any], out_edges: Mapping[str, list[EdgeDefinition]]
                       ) -> dict[str, int]:
    """Tarjan's strongly connected components, iteratively; keeps only real cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: dict[str, int] = {}
    counter = 0
    component = 0
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, pos = work.pop()
            if pos == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            targets = [e.target for e in out_edges.get(node, []) if e.target in nodes]
            if pos < len(targets):
                work.append((node, pos + 1))
                nxt = targets[pos]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                group: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                self_loop = any(e.target == node for e in out_edges.get(node, []))
                if len(group) > 1 or self_loop:
                    for member in group:
                        result[member] = component
                    component += 1
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return result


def start_nodes(graph: Graph) -> list[str]:
    """Nodes with no incoming edge that are nobody's fallback; else each cycle's head (§3.1)."""
    starts = [
        n for n in graph.nodes
        if not graph.in_edges.get(n) and n not in graph.fallback_for
    ]
    if starts:
        return starts
    return [n for n in graph.nodes if n in graph.loop_heads]
