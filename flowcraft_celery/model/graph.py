"""The static shape of a run's graph: edges by node, predecessors, cycles and loop heads.

Built once per blueprint (plus the dynamic nodes a run added) and shared by the engine's
decisions; it holds no run state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from flowcraft_celery.errors import FlowcraftError
from flowcraft_celery.model import iterations
from flowcraft_celery.model.blueprint import Blueprint, EdgeDefinition, NodeDefinition, parse_node

LOOP_CONTROLLER = "loop-controller"


class DynamicNodeError(FlowcraftError, ValueError):
    """A result's dynamic nodes cannot join the run's graph (an id already taken); names it."""


@dataclass(frozen=True)
class DynamicAddition:
    """Nodes a result added to this run at one loop iteration: each wired from `parent` (and
    into `gather`); its edges exist in that iteration only, so each pass has its own nodes.

    A node definition may carry (our extensions) `input`: its fixed input, instead of the
    parent's output; and `after`: ids of earlier dynamic nodes it waits for (an `all` join),
    instead of starting right after the parent.
    """

    parent: str
    nodes: tuple[NodeDefinition, ...]
    gather: str | None = None
    iteration: int = 0

    @classmethod
    def from_result(cls, parent: str, nodes: list[dict[str, Any]], output: Any, iteration: int = 0
                    ) -> DynamicAddition:
        """Parse a result's `dynamicNodes`; a `gatherNodeId` in its output names the gather node."""
        gather = output.get("gatherNodeId") if isinstance(output, dict) else None
        parsed = tuple(parse_node(n, f"{parent}.dynamicNodes[{i}]") for i, n in enumerate(nodes))
        return cls(parent, parsed, gather if isinstance(gather, str) else None, iteration)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, for storing a run's additions."""
        return {"parent": self.parent, "gather": self.gather, "iteration": self.iteration,
                "nodes": [n.to_dict() for n in self.nodes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DynamicAddition:
        """Inverse of `to_dict`."""
        return cls.from_result(data["parent"], data["nodes"], {"gatherNodeId": data.get("gather")},
                               int(data.get("iteration") or 0))

    def sort_key(self) -> tuple[int, str]:
        """Additions are applied in (iteration, parent) order, whatever order they were stored in."""
        return self.iteration, self.parent

    def edges(self) -> list[EdgeDefinition]:
        """The edges this addition brings: parent (or `after` nodes) into each node, each into the gather."""
        out: list[EdgeDefinition] = []
        for definition in self.nodes:
            after = definition.extra.get("after")
            sources = after if isinstance(after, list) and after else [self.parent]
            out += [EdgeDefinition(source=str(source), target=definition.id) for source in sources]
            if self.gather:
                out.append(EdgeDefinition(source=definition.id, target=self.gather))
        return out


@dataclass
class Graph:
    """A blueprint's graph with its derived indexes; `extend` adds a run's dynamic nodes.

    Loops (SPEC §3.8): each cycle has a head (its loop-controller, else an entry point). A
    head's *body* is every node reachable from its `continue` targets without passing through
    the head, less the nodes that can also be reached from a start, or from the head's own
    exit targets, without passing through it (a join with the outside is not part of the loop,
    nor is the merge node its `break` and a side exit of the body lead to: that runs once, after
    the loop). The body runs once per iteration.

    Loops nest: an inner loop's head and body lie in the outer loop's body. A node's
    iteration counts the passes of every loop around it (`model.iterations`): each pass of the
    outer loop runs the inner loop afresh, from its pass 0.
    """

    blueprint: Blueprint
    additions: tuple[DynamicAddition, ...] = ()
    nodes: dict[str, NodeDefinition] = field(init=False)
    edges: list[EdgeDefinition] = field(init=False)

    def __post_init__(self) -> None:
        self.nodes = {n.id: n for n in self.blueprint.nodes}
        self.edges = list(self.blueprint.edges)
        self._static_ids = frozenset(self.nodes)
        self._fixed: dict[tuple[str, int], Any] = {}
        self._definitions: dict[tuple[str, int], NodeDefinition] = {}
        self._dynamic_out: dict[tuple[str, int], list[EdgeDefinition]] = {}
        self._dynamic_in: dict[tuple[str, int], list[EdgeDefinition]] = {}
        owners: dict[str, str] = {}
        known_edges: set[tuple[str, str]] = set()
        for addition in sorted(self.additions, key=DynamicAddition.sort_key):
            for definition in addition.nodes:
                if definition.id in self._static_ids:
                    raise DynamicNodeError(f"dynamic node {definition.id!r} added by {addition.parent!r} has the "
                                           "id of a blueprint node")
                if owners.setdefault(definition.id, addition.parent) != addition.parent:
                    raise DynamicNodeError(f"dynamic node {definition.id!r} added by {addition.parent!r} was "
                                           f"already added by {owners[definition.id]!r}")
                self.nodes[definition.id] = definition
                self._definitions[(definition.id, addition.iteration)] = definition
                if "input" in definition.extra:
                    self._fixed[(definition.id, addition.iteration)] = definition.extra["input"]
            for edge in addition.edges():
                self._dynamic_out.setdefault((edge.source, addition.iteration), []).append(edge)
                self._dynamic_in.setdefault((edge.target, addition.iteration), []).append(edge)
                if (edge.source, edge.target) not in known_edges:
                    known_edges.add((edge.source, edge.target))
                    self.edges.append(edge)

    def extend(self, additions: Iterable[DynamicAddition]) -> Graph:
        """A new graph with more dynamic nodes (already-known additions are not repeated);
        DynamicNodeError when a node id is already taken."""
        new = tuple(a for a in additions if a not in self.additions)
        if not new:
            return self
        graph = Graph(self.blueprint, self.additions + new)
        graph.__dict__["iteration_width"] = self.iteration_width  # the blueprint's, computed once
        return graph

    def node(self, node_id: str, iteration: int = 0) -> NodeDefinition:
        """A node's definition; a dynamic node's as added in that iteration."""
        return self._definitions.get((node_id, iteration)) or self.nodes[node_id]

    def fixed_input(self, node_id: str, iteration: int) -> tuple[bool, Any]:
        """Whether a dynamic node has a fixed input in that iteration (`input` of its definition), and it."""
        key = (node_id, iteration)
        return (True, self._fixed[key]) if key in self._fixed else (False, None)

    @cached_property
    def out_edges(self) -> dict[str, list[EdgeDefinition]]:
        """Outgoing edges by source node, in blueprint order (dynamic ones of every iteration)."""
        out: dict[str, list[EdgeDefinition]] = {n: [] for n in self.nodes}
        for edge in self.edges:
            out.setdefault(edge.source, []).append(edge)
        return out

    @cached_property
    def in_edges(self) -> dict[str, list[EdgeDefinition]]:
        """Incoming edges by target node, in blueprint order (dynamic ones of every iteration)."""
        out: dict[str, list[EdgeDefinition]] = {n: [] for n in self.nodes}
        for edge in self.edges:
            out.setdefault(edge.target, []).append(edge)
        return out

    def out_edges_at(self, node_id: str, iteration: int) -> list[EdgeDefinition]:
        """A node's outgoing edges in one iteration: the blueprint's, plus that iteration's dynamic ones."""
        return self._static_out.get(node_id, []) + self._dynamic_out.get((node_id, iteration), [])

    def predecessors(self, node_id: str, iteration: int | None = None) -> list[str]:
        """Distinct sources of the node's incoming edges, in order; with `iteration`, only the
        dynamic edges added in that iteration count."""
        if iteration is None:
            edges = self.in_edges.get(node_id, [])
        else:
            edges = self._static_in.get(node_id, []) + self._dynamic_in.get((node_id, iteration), [])
        return list(dict.fromkeys(e.source for e in edges))

    @cached_property
    def _static_in(self) -> dict[str, list[EdgeDefinition]]:
        """The blueprint's own edges by target."""
        out: dict[str, list[EdgeDefinition]] = {}
        for edge in self.blueprint.edges:
            out.setdefault(edge.target, []).append(edge)
        return out

    @cached_property
    def _static_out(self) -> dict[str, list[EdgeDefinition]]:
        """The blueprint's own edges by source."""
        out: dict[str, list[EdgeDefinition]] = {}
        for edge in self.blueprint.edges:
            out.setdefault(edge.source, []).append(edge)
        return out

    @cached_property
    def fallback_for(self) -> dict[str, str]:
        """Fallback node id -> the node whose `config.fallback` names it."""
        return {n.config.fallback: n.id for n in self.nodes.values() if n.config.fallback}

    def fallback_chain(self, node_id: str) -> list[str]:
        """The nodes a fallback node stands in for, nearest first: with `a` naming `b` in its
        `config.fallback` and `b` naming `c`, `c`'s chain is `[b, a]` (empty for a node that is
        nobody's fallback). A fallback that succeeds drives the edges of each of them (§3.9)."""
        chain: list[str] = []
        current = node_id
        while (original := self.fallback_for.get(current)) is not None and original != node_id \
                and original not in chain:
            chain.append(original)
            current = original
        return chain

    def fallback_root(self, node_id: str) -> str:
        """The node a fallback chain began with (the node itself when it is nobody's fallback):
        a fallback runs in its iteration and stands in for it."""
        chain = self.fallback_chain(node_id)
        return chain[-1] if chain else node_id

    def fallbacks_below(self, node_id: str) -> list[str]:
        """The fallbacks that may run after a node fails, nearest first: its `config.fallback`,
        that node's `config.fallback`, and so on (each once)."""
        below: list[str] = []
        current = self.nodes.get(node_id)
        while current is not None and current.config.fallback and current.config.fallback != node_id \
                and current.config.fallback not in below:
            below.append(current.config.fallback)
            current = self.nodes.get(current.config.fallback)
        return below

    @cached_property
    def shared_fallbacks(self) -> frozenset[str]:
        """Fallback nodes that more than one node names in its `config.fallback`."""
        named = [n.config.fallback for n in self.nodes.values() if n.config.fallback]
        return frozenset(f for f in named if named.count(f) > 1)

    @cached_property
    def components(self) -> dict[str, int]:
        """Cycle membership: node id -> index of its strongly connected cycle (acyclic nodes absent)."""
        return cyclic_components(self.nodes, self.out_edges)

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

    def _flow_targets(self, node_id: str) -> list[str]:
        """Where control may go from a node: its edges' targets, and its fallback node."""
        targets = [e.target for e in self.out_edges.get(node_id, [])]
        fallback = self.nodes[node_id].config.fallback if node_id in self.nodes else None
        return [*targets, fallback] if fallback else targets

    def _reach(self, roots: Iterable[str], avoid: str, stop: Iterable[str] = ()) -> set[str]:
        """Nodes reachable from `roots` without entering `avoid`; nodes in `stop` are reached
        but not passed through."""
        seen: set[str] = set()
        halt = set(stop)
        todo = [r for r in roots if r != avoid]
        while todo:
            current = todo.pop()
            if current in seen or current not in self.nodes:
                continue
            seen.add(current)
            if current in halt:
                continue
            todo += [t for t in self._flow_targets(current) if t != avoid and t not in seen]
        return seen

    def _entries(self, head: str) -> list[str]:
        """Where a pass of the head's loop starts: its `continue` targets (a loop-controller),
        else its targets on its own cycle."""
        edges = self.out_edges.get(head, [])
        if self.nodes[head].uses == LOOP_CONTROLLER:
            return [e.target for e in edges if e.action == "continue"]
        return [e.target for e in edges if self.same_cycle(head, e.target)]

    @cached_property
    def _reaching(self) -> dict[str, frozenset[str]]:
        """Loop head -> the nodes reachable from its pass's entries without passing through it,
        less those a start reaches without passing through it (its body, before the nodes its
        own exits lead to are taken away too)."""
        starts = [*start_nodes(self), *self.fallback_for]
        return {head: frozenset(self._reach(self._entries(head), head) - self._reach(starts, head))
                for head in self.loop_heads}

    @cached_property
    def bodies(self) -> dict[str, frozenset[str]]:
        """Loop head -> its body (see the class docstring).

        What the head's own exits lead to is outside its body, like what a start leads to: a
        merge node reached both by the head's `break` and by a side exit of the body is after
        the loop, and runs once when the loop is left, not once per pass. An exit target is one
        of the head's targets outside its pass (not a `continue` target) that cannot come back
        to the head without passing through a loop around it (so a loop-controller's conditional
        edge into its own cycle stays a way into the body)."""
        starts = [*start_nodes(self), *self.fallback_for]
        out: dict[str, frozenset[str]] = {}
        for head in self.loop_heads:
            entries = set(self._entries(head))
            around = {h for h in self.loop_heads if h != head and head in self._reaching[h]}
            exits = [e.target for e in self.out_edges.get(head, []) if e.target not in entries
                     and e.target != head and head not in self._reach([e.target], "", {head, *around})]
            outside = self._reach([*starts, *exits], head)
            out[head] = frozenset(self._reaching[head] - outside)
        return out

    def in_region(self, node_id: str, head: str) -> bool:
        """Whether a node is the loop's head or in its body."""
        return node_id == head or node_id in self.bodies[head]

    @cached_property
    def _looped(self) -> frozenset[str]:
        """Every node that belongs to some loop (a head or a body node)."""
        return frozenset(self.loop_heads).union(*self.bodies.values())

    def in_any_loop(self, node_id: str) -> bool:
        """Whether a node runs once per iteration of some loop."""
        return node_id in self._looped

    def is_back_edge(self, edge: EdgeDefinition) -> bool:
        """An edge from inside a loop to its head: taking it starts a new iteration."""
        return edge.target in self.loop_heads and self.in_region(edge.source, edge.target)

    def loops_left_by(self, edge: EdgeDefinition) -> list[str]:
        """Heads of the loops an edge leaves (source inside, target outside)."""
        return [h for h in self.loop_heads if self.in_region(edge.source, h) and not self.in_region(edge.target, h)]

    def is_exit_edge(self, edge: EdgeDefinition) -> bool:
        """An edge leaving a loop."""
        return bool(self.loops_left_by(edge))

    def exit_edges(self, head: str) -> list[EdgeDefinition]:
        """Every edge leaving the loop of `head`."""
        return [e for e in self.edges if self.in_region(e.source, head) and not self.in_region(e.target, head)]

    @cached_property
    def _chains(self) -> dict[str, tuple[str, ...]]:
        """Node id -> heads of the loops around it, outermost first (a head is in its own loop)."""
        order = sorted(self.loop_heads, key=lambda h: (-len(self.bodies[h]), h))
        return {n: tuple(h for h in order if self.in_region(n, h)) for n in self.nodes}

    def loops_of(self, node_id: str) -> tuple[str, ...]:
        """Heads of the loops a node runs in, outermost first (empty outside every loop)."""
        return self._chains.get(node_id, ())

    @cached_property
    def _spines(self) -> dict[str, frozenset[str]]:
        """Loop head -> the nodes of its loop from which control can come back to the head
        (the head itself included), moving only inside the loop."""
        out: dict[str, frozenset[str]] = {}
        for head in self.loop_heads:
            seen = {head}
            todo = [head]
            while todo:
                current = todo.pop()
                for edge in self.in_edges.get(current, []):
                    if edge.source not in seen and self.in_region(edge.source, head):
                        seen.add(edge.source)
                        todo.append(edge.source)
            out[head] = frozenset(seen)
        return out

    def returns_to(self, node_id: str, head: str) -> bool:
        """Whether control at this node can come back to the loop's head within the loop."""
        return node_id in self._spines.get(head, frozenset())

    @cached_property
    def iteration_width(self) -> int:
        """Digits per inner level of an iteration (`model.iterations`), from how deeply the
        blueprint's own loops nest (dynamic nodes never change it)."""
        if self.additions and self.loop_heads:  # without loops at all there is nothing to look up
            return Graph(self.blueprint).iteration_width
        return iterations.width_for(max((len(c) for c in self._chains.values()), default=0))

    def passes(self, node_id: str, iteration: int) -> tuple[int, ...]:
        """A node execution's pass count in each loop around the node, outermost first."""
        return iterations.decode(iteration, len(self.loops_of(node_id)), self.iteration_width)

    def iteration_at(self, passes: tuple[int, ...] | list[int]) -> int:
        """The iteration of a node execution with these passes; IterationOverflowError past the limits."""
        return iterations.encode(passes, self.iteration_width)

    def _runs_as(self, node_id: str) -> str:
        """The node whose loops a node's executions count: a fallback node (outside every loop
        itself) runs in the iteration of the node it stands in for."""
        seen = {node_id}
        while not self.loops_of(node_id) and node_id in self.fallback_for and self.fallback_for[node_id] not in seen:
            node_id = self.fallback_for[node_id]
            seen.add(node_id)
        return node_id

    def iteration_label(self, node_id: str, iteration: int) -> str:
        """A node execution's iteration as its passes: `2.5` in nested loops, `3` in one loop."""
        return iterations.label(self.passes(self._runs_as(node_id), iteration))

    def parse_iteration(self, node_id: str, text: str) -> int:
        """A node execution's iteration from what a person gave: passes as `iteration_label`
        shows them (`2.5`) or the iteration number; ValueError naming the node and the value."""
        try:
            return iterations.parse(text, len(self.loops_of(self._runs_as(node_id))), self.iteration_width)
        except ValueError as exc:
            raise ValueError(f"node {node_id!r}: {exc}") from None

    def execution(self, ref: str) -> tuple[str, int | None]:
        """`node`, `node@2.5` or `node@2000005` as (node id, iteration or None when not given);
        a node whose id contains `@` is taken whole. ValueError for an unknown node or a bad iteration."""
        if ref in self.nodes:
            return ref, None
        node_id, at, text = ref.rpartition("@")
        if not at or node_id not in self.nodes:
            raise ValueError(f"no node {(node_id or ref)!r} in blueprint {self.blueprint.id!r}")
        return node_id, self.parse_iteration(node_id, text)

    def execution_label(self, node_id: str, iteration: int) -> str:
        """`node@2.5`: a node execution as commands show it (passes, outer loop first)."""
        return f"{node_id}@{self.iteration_label(node_id, iteration)}" if node_id in self.nodes \
            else f"{node_id}@{iteration}"

    def join_predecessors(self, node_id: str, iteration: int, back: bool = False) -> list[str]:
        """Predecessors a node waits for in an iteration: a loop head waits for the arrivals
        from outside its loop when entered, and for those from its body on a back edge."""
        preds = self.predecessors(node_id, iteration)
        if node_id not in self.loop_heads:
            return preds
        inside = [p for p in preds if self.in_region(p, node_id)]
        outside = [p for p in preds if not self.in_region(p, node_id)]
        return (inside or preds) if back else (outside or preds)

    @property
    def max_iterations(self) -> int | None:
        """`metadata.maxIterations`: the explicit bound of a cycle without a loop-controller."""
        value = self.blueprint.metadata.get("maxIterations")
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def cyclic_components(nodes: Mapping[str, Any], out_edges: Mapping[str, list[EdgeDefinition]]
                       ) -> dict[str, int]:
    """Tarjan's strongly connected components, iteratively; keeps only real cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: dict[str, int] = {}
    counter = 0
    component = 0
    targets_of: dict[str, list[str]] = {}  # each node's targets, listed once (a hub is revisited per edge)
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
            targets = targets_of.get(node)
            if targets is None:
                targets = targets_of[node] = [e.target for e in out_edges.get(node, []) if e.target in nodes]
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
