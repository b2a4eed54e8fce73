"""Blueprint validation before a run starts (SPEC §7): every problem at once, each named.

`validate` returns all issues (errors and warnings); `validate_or_raise` raises
`BlueprintValidationError` carrying them when any is an error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from flowcraft_celery.errors import FlowcraftError
from flowcraft_celery.expressions.evaluator import ExpressionError, validate_expression
from flowcraft_celery.model.blueprint import Blueprint, NodeDefinition
from flowcraft_celery.model.durations import sleep_seconds
from flowcraft_celery.model.graph import LOOP_CONTROLLER, Graph, cyclic_components, start_nodes
from flowcraft_celery.model.ids import id_problem
from flowcraft_celery.model.printable import printable
from flowcraft_celery.model.strict_json import non_finite_path

BUILTIN_USES = frozenset({
    "loop-controller", "batch-scatter", "batch-gather", "sleep", "wait", "webhook", "subflow",
})


@dataclass(frozen=True)
class ValidationIssue:
    """One problem: a code from SPEC §7, a message naming the node, edge or field, a severity."""

    code: str
    message: str
    severity: Literal["error", "warning"] = "error"
    node_id: str | None = None
    edge: str | None = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """JSON form, for `flowcraft-celery validate --json`."""
        out: dict[str, Any] = {"code": self.code, "message": self.message, "severity": self.severity}
        if self.node_id is not None:
            out["nodeId"] = self.node_id
        if self.edge is not None:
            out["edge"] = self.edge
        return out


class BlueprintValidationError(FlowcraftError, ValueError):
    """A blueprint failed validation; `issues` lists every error found."""

    def __init__(self, blueprint_id: str, issues: list[ValidationIssue]) -> None:
        lines = "\n".join(f"  - {i}" for i in issues)
        super().__init__(f"blueprint {blueprint_id!r} is invalid:\n{lines}")
        self.blueprint_id = blueprint_id
        self.issues = issues


def validate(
    blueprint: Blueprint,
    registry: Container[str] | None = None,
    blueprints: Mapping[str, Any] | None = None,
) -> list[ValidationIssue]:
    """All problems of a blueprint; `registry` and `blueprints` enable the lookups they know."""
    document, graph = _content_issues(blueprint)
    issues = list(document)
    known = {n.id for n in blueprint.nodes}
    for node in blueprint.nodes:
        issues += _node_issues(node, known, registry, blueprints, blueprint.id)
    issues += graph
    if blueprints is not None:
        issues += _recursion_issues(blueprint, blueprints)
    return issues


def _content_issues(blueprint: Blueprint) -> tuple[tuple[ValidationIssue, ...], tuple[ValidationIssue, ...]]:
    """The problems that depend on the document alone (numbers, ids, edges; the whole graph), found
    once per object, as its fingerprint is: every start validates its blueprint, which is not to be
    changed in place once a run uses it."""
    cached: tuple[tuple[ValidationIssue, ...], tuple[ValidationIssue, ...]] | None = \
        blueprint.__dict__.get("_content_issues")
    if cached is None:
        known = {n.id for n in blueprint.nodes}
        cached = blueprint.__dict__["_content_issues"] = (tuple(_document_issues(blueprint)),
                                                          tuple(_graph_issues(blueprint, known)))
    return cached


def _document_issues(blueprint: Blueprint) -> list[ValidationIssue]:
    """Non-finite numbers, bad or duplicate ids, edges that name no node, unparsable edge expressions."""
    issues: list[ValidationIssue] = []
    bad_number = non_finite_path(blueprint.to_dict())
    if bad_number is not None:
        issues.append(ValidationIssue("INVALID_NUMBER", f"{bad_number}: must be a finite number (JSON has no NaN "
                                                        "or Infinity)"))
    problem = id_problem(blueprint.id)
    if problem is not None:
        issues.append(ValidationIssue("INVALID_ID", f"blueprint id '{printable(blueprint.id, 80)}' {problem}"))
    ids = [n.id for n in blueprint.nodes]
    for node_id in dict.fromkeys(ids):
        problem = id_problem(node_id)
        if problem is not None:
            issues.append(ValidationIssue("INVALID_ID", f"node id '{printable(node_id, 80)}' {problem}",
                                          node_id=node_id))
    for node_id, count in Counter(ids).items():
        if count > 1:
            issues.append(ValidationIssue("DUPLICATE_NODE_ID", f"node id {node_id!r} is used {count} times",
                                          node_id=node_id))
    known = set(ids)
    for index, edge in enumerate(blueprint.edges):
        where = f"edges[{index}] ({edge.label})"
        if edge.source not in known:
            issues.append(ValidationIssue("INVALID_EDGE_SOURCE", f"{where}: source {edge.source!r} is not a node",
                                          edge=edge.label))
        if edge.target not in known:
            issues.append(ValidationIssue("INVALID_EDGE_TARGET", f"{where}: target {edge.target!r} is not a node",
                                          edge=edge.label))
        for field_name, text in (("condition", edge.condition), ("transform", edge.transform)):
            if text is not None:
                issues += _expression_issue(text, f"{where}.{field_name}", edge=edge.label)
    return issues


def validate_or_raise(
    blueprint: Blueprint,
    registry: Container[str] | None = None,
    blueprints: Mapping[str, Any] | None = None,
) -> list[ValidationIssue]:
    """Validate; raise BlueprintValidationError on any error, else return the warnings."""
    issues = validate(blueprint, registry, blueprints)
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        raise BlueprintValidationError(blueprint.id, errors)
    return issues


def _expression_issue(text: str, where: str, node_id: str | None = None,
                      edge: str | None = None) -> list[ValidationIssue]:
    """INVALID_EXPRESSION naming where the expression sits, if it does not parse."""
    try:
        validate_expression(text)
    except ExpressionError as exc:
        return [ValidationIssue("INVALID_EXPRESSION", f"{where}: {exc}", node_id=node_id, edge=edge)]
    return []


def _node_issues(
    node: NodeDefinition,
    known: set[str],
    registry: Container[str] | None,
    blueprints: Mapping[str, Any] | None,
    own_id: str,
) -> list[ValidationIssue]:
    """Per-node checks: implementation, config ranges, built-in parameters."""
    issues: list[ValidationIssue] = []
    where = f"node {node.id!r}"

    def config_error(message: str) -> None:
        issues.append(ValidationIssue("INVALID_CONFIG", f"{where}: config.{message}", node_id=node.id))

    if registry is not None and node.uses not in BUILTIN_USES and node.uses not in registry:
        issues.append(ValidationIssue("MISSING_NODE_IMPLEMENTATION",
                                      f"{where}: no implementation registered for uses {node.uses!r}",
                                      node_id=node.id))
    config = node.config
    if config.max_retries is not None and config.max_retries < 1:
        config_error(f"maxRetries must be an integer >= 1 (total attempts), got {config.max_retries}")
    if config.retry_delay is not None and config.retry_delay < 0:
        config_error(f"retryDelay must not be negative, got {config.retry_delay}")
    if config.timeout is not None and config.timeout <= 0:
        config_error(f"timeout must be a positive number of milliseconds, got {config.timeout}")
    if config.join_strategy is not None and config.join_strategy not in ("all", "any"):
        config_error(f'joinStrategy must be "all" or "any", got {config.join_strategy!r}')
    if config.fallback is not None and (config.fallback not in known or config.fallback == node.id):
        config_error(f"fallback {config.fallback!r} must name another node of the blueprint")
    if config.queue is not None and not config.queue.strip():
        config_error("queue must be a non-empty queue name")
    if node.uses == "batch-scatter":
        worker = node.params.get("workerUsesKey")
        if not isinstance(worker, str) or (registry is not None and worker not in registry):
            issues.append(ValidationIssue("INVALID_BATCH_WORKER_KEY",
                                          f"{where}: params.workerUsesKey {worker!r} names no registered "
                                          "implementation",
                                          node_id=node.id))
        chunk = node.params.get("chunkSize")
        if chunk is not None and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1):
            issues.append(ValidationIssue("INVALID_CONFIG", f"{where}: params.chunkSize must be a positive integer, "
                                          f"got {chunk!r}", node_id=node.id))
        if not isinstance(node.params.get("gatherNodeId"), str) or node.params["gatherNodeId"] not in known:
            issues.append(ValidationIssue("INVALID_CONFIG",
                                          f"{where}: params.gatherNodeId {node.params.get('gatherNodeId')!r} "
                                          "must name a node of the blueprint", node_id=node.id))
    if node.uses == "subflow":
        child = node.params.get("blueprintId")
        if not isinstance(child, str) or not child or (
                blueprints is not None and child not in blueprints and child != own_id):
            searched = getattr(blueprints, "searched", None)
            hint = f" ({searched(child)}; name more folders with --blueprints or FLOWCRAFT_BLUEPRINTS)" \
                if callable(searched) and isinstance(child, str) and child else ""
            issues.append(ValidationIssue("INVALID_SUBFLOW_BLUEPRINT_ID",
                                          f"{where}: params.blueprintId {child!r} names no known blueprint{hint}",
                                          node_id=node.id))
    if node.uses == LOOP_CONTROLLER:
        condition = node.params.get("condition")
        if not isinstance(condition, str):
            issues.append(ValidationIssue("INVALID_EXPRESSION",
                                          f"{where}: params.condition must be an expression string, got {condition!r}",
                                          node_id=node.id))
        else:
            issues += _expression_issue(condition, f"{where}.params.condition", node_id=node.id)
    if node.uses == "sleep":
        try:
            sleep_seconds(node.params, node.id)
        except ValueError as exc:
            issues.append(ValidationIssue("INVALID_CONFIG", str(exc), node_id=node.id))
    return issues


def _graph_issues(blueprint: Blueprint, known: set[str]) -> list[ValidationIssue]:
    """Whole-graph checks: loops need a continue edge, entry points exist, orphans warned."""
    issues: list[ValidationIssue] = []
    if not blueprint.nodes:
        return [ValidationIssue("NO_START_NODE", "the blueprint has no nodes")]
    sound_edges = [e for e in blueprint.edges if e.source in known and e.target in known]
    graph = Graph(Blueprint(blueprint.id, list({n.id: n for n in blueprint.nodes}.values()), sound_edges,
                            blueprint.metadata))
    for node in blueprint.nodes:
        if node.uses == LOOP_CONTROLLER and not any(
                e.action == "continue" for e in graph.out_edges.get(node.id, [])):
            issues.append(ValidationIssue("LOOP_WITHOUT_CONTINUE_EDGE",
                                          f"loop-controller {node.id!r} has no outgoing edge with action 'continue'",
                                          node_id=node.id))
    entry_points = blueprint.metadata.get("cycleEntryPoints")
    if entry_points is not None:
        if not isinstance(entry_points, list):
            issues.append(ValidationIssue("INVALID_CONFIG", "metadata.cycleEntryPoints must be an array of node ids"))
        else:
            for entry in entry_points:
                if not isinstance(entry, str) or entry not in known:
                    issues.append(ValidationIssue("INVALID_CONFIG",
                                                  f"metadata.cycleEntryPoints names unknown node {entry!r}"))
    issues += _cycle_issues(blueprint, graph)
    issues += _fallback_loop_issues(graph)
    starts = start_nodes(graph)
    if not starts:
        return [*issues, ValidationIssue("NO_START_NODE", "no node can start the run")]
    reachable = _reachable(graph, [*starts, *graph.fallback_for])
    for node in blueprint.nodes:
        if node.id not in reachable:
            issues.append(ValidationIssue("ORPHAN_NODE", f"node {node.id!r} is unreachable from any start node",
                                          severity="warning", node_id=node.id))
    return issues


def _fallback_loop_issues(graph: Graph) -> list[ValidationIssue]:
    """INVALID_CONFIG for a chain of `config.fallback` that comes back to one of its nodes: its
    nodes would fall back to one another forever. Reported once, at the cycle's smallest id."""
    issues: list[ValidationIssue] = []
    for node_id in graph.nodes:
        below = graph.fallbacks_below(node_id)
        last = graph.nodes.get(below[-1]) if below else None
        if last is None or last.config.fallback != node_id or node_id != min([node_id, *below]):
            continue
        loop = " -> ".join([node_id, *below, node_id])
        issues.append(ValidationIssue("INVALID_CONFIG", f"node {node_id!r}: config.fallback chain {loop} comes "
                                      "back to where it began, so its nodes would fall back to one another forever",
                                      node_id=node_id))
    return issues


def _cycle_issues(blueprint: Blueprint, graph: Graph) -> list[ValidationIssue]:
    """Every cycle must pass through a loop head, and a cycle without a loop-controller needs
    an explicit bound (`metadata.maxIterations`), so no blueprint loops for ever by mistake."""
    issues: list[ValidationIssue] = []
    bound = blueprint.metadata.get("maxIterations")
    if bound is not None and (not isinstance(bound, int) or isinstance(bound, bool) or bound < 1):
        issues.append(ValidationIssue("INVALID_CONFIG", f"metadata.maxIterations must be a positive integer, "
                                      f"got {bound!r}"))
    groups: dict[int, list[str]] = {}
    for node_id, group in graph.components.items():
        groups.setdefault(group, []).append(node_id)
    for members in groups.values():
        if graph.max_iterations is None and not any(graph.nodes[n].uses == LOOP_CONTROLLER for n in members):
            issues.append(ValidationIssue(
                "CYCLE_WITHOUT_LOOP_CONTROLLER",
                f"nodes {', '.join(repr(n) for n in sorted(members))} form a cycle without a loop-controller; "
                "route it through a loop-controller, or bound it with metadata.maxIterations", node_id=members[0]))
    forward = {n: [e for e in graph.out_edges.get(n, []) if not graph.is_back_edge(e)] for n in graph.nodes}
    rest: dict[int, list[str]] = {}
    for node_id, group in cyclic_components(graph.nodes, forward).items():
        rest.setdefault(group, []).append(node_id)
    for members in rest.values():
        issues.append(ValidationIssue(
            "CYCLE_WITHOUT_LOOP_CONTROLLER",
            f"nodes {', '.join(repr(n) for n in sorted(members))} form a cycle that does not pass through its "
            f"loop's head ({', '.join(sorted(graph.loop_heads & set(graph.components)))}): each pass of a cycle "
            "must go through the loop-controller", node_id=members[0]))
    return issues


def _recursion_issues(blueprint: Blueprint, blueprints: Mapping[str, Any]) -> list[ValidationIssue]:
    """RECURSIVE_SUBFLOW for each subflow node from which a chain of subflows reaches a
    blueprint already on the chain (A -> A, A -> B -> A, ...)."""

    def known(blueprint_id: str) -> Any:  # a lookup, not a copy: a lazy catalog reads only what it is asked for
        return blueprint if blueprint_id == blueprint.id else blueprints.get(blueprint_id)

    def children(bp: Any) -> list[tuple[str, str]]:
        nodes = getattr(bp, "nodes", [])
        return [(n.id, str(n.params.get("blueprintId"))) for n in nodes if n.uses == "subflow"]

    def cycle_from(chain: list[str]) -> list[str] | None:
        for _, child in children(known(chain[-1])):
            if child in chain:
                return [*chain[chain.index(child):], child]
            if known(child) is not None:
                found = cycle_from([*chain, child])
                if found:
                    return found
        return None

    issues: list[ValidationIssue] = []
    for node_id, child in children(blueprint):
        cycle = [blueprint.id, blueprint.id] if child == blueprint.id else cycle_from([blueprint.id, child])
        if cycle:
            issues.append(ValidationIssue(
                "RECURSIVE_SUBFLOW", f"node {node_id!r}: subflow blueprint {child!r} includes itself: "
                + " -> ".join(repr(b) for b in cycle), node_id=node_id))
    return issues


def _reachable(graph: Graph, roots: Iterable[str]) -> set[str]:
    """Nodes reachable from `roots` along edges (fallback nodes count as reached)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo += [e.target for e in graph.out_edges.get(node, [])]
    return seen
