"""A blueprint's graph as a Mermaid flowchart, optionally coloured by the state of each node.

Nodes get safe Mermaid ids (`n0`, `n1`, ...) and show their id and implementation; an edge
shows its action and condition. With `states` (node id -> state, e.g. from a run), each node
gets the class of its state, so a rendered diagram shows what ran, what failed and what waits.
Paste the text into any Mermaid renderer (GitHub and GitLab Markdown render ```mermaid blocks).
"""

from __future__ import annotations

from collections.abc import Mapping

from flowcraft_celery.model.graph import Graph
from flowcraft_celery.model.printable import printable

#: Fill and stroke per node state (the states `flowcraft-celery show` reports).
STATE_STYLES: dict[str, str] = {
    "succeeded": "fill:#d4edda,stroke:#2e7d32,color:#1b5e20",
    "running": "fill:#cfe2ff,stroke:#1565c0,color:#0d47a1",
    "queued": "fill:#e8eaf6,stroke:#5c6bc0,color:#283593",
    "retrying": "fill:#fff3cd,stroke:#f9a825,color:#6d4c00",
    "sleeping": "fill:#ede7f6,stroke:#7e57c2,color:#4527a0",
    "awaiting": "fill:#ffe0b2,stroke:#ef6c00,color:#e65100",
    "subflow": "fill:#e0f7fa,stroke:#00838f,color:#006064",
    "failed": "fill:#f8d7da,stroke:#c62828,color:#b71c1c",
    "cancelled": "fill:#eeeeee,stroke:#616161,color:#424242",
    "not-run": "fill:#ffffff,stroke:#bdbdbd,color:#9e9e9e,stroke-dasharray:4 3",
}


def _text(value: str) -> str:
    """Text safe inside a quoted Mermaid label (control characters escaped, long text cut)."""
    return (printable(value, 300).replace("&", "&amp;").replace('"', "#quot;").replace("<", "&lt;")
            .replace(">", "&gt;"))


def mermaid(graph: Graph, states: Mapping[str, str] | None = None, direction: str = "TD") -> str:
    """The Mermaid `flowchart` text of `graph`; nodes coloured by `states` when given."""
    ids = {node_id: f"n{i}" for i, node_id in enumerate(graph.nodes)}
    lines = [f"flowchart {direction}"]
    for node_id, node in graph.nodes.items():
        lines.append(f'    {ids[node_id]}["{_text(node_id)}<br/><small>{_text(node.uses)}</small>"]')
    for edge in graph.edges:
        if edge.source not in ids or edge.target not in ids:
            continue
        parts = [p for p in (edge.action, edge.condition) if p]
        arrow = f'-->|"{_text(" / ".join(parts))}"|' if parts else "-->"
        lines.append(f"    {ids[edge.source]} {arrow} {ids[edge.target]}")
    if states:
        used = sorted({states.get(n, "not-run") for n in graph.nodes} & STATE_STYLES.keys())
        for state in used:
            lines.append(f"    classDef {_class(state)} {STATE_STYLES[state]}")
        for state in used:
            members = [ids[n] for n in graph.nodes if states.get(n, "not-run") == state]
            lines.append(f"    class {','.join(members)} {_class(state)}")
    return "\n".join(lines) + "\n"


def _class(state: str) -> str:
    """The Mermaid class name of a state (letters only)."""
    return "st_" + "".join(c if c.isalnum() else "_" for c in state)
