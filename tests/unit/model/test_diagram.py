"""A blueprint as a Mermaid flowchart, coloured by node state."""

from __future__ import annotations

import re

from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.diagram import mermaid
from flowcraft_celery.model.graph import Graph

BLUEPRINT = Blueprint.from_dict({
    "id": "diagram",
    "nodes": [
        {"id": "start", "uses": "a"},
        {"id": 'say "hi" <now>', "uses": "b"},
        {"id": "end", "uses": "c"},
    ],
    "edges": [
        {"source": "start", "target": 'say "hi" <now>', "action": "go", "condition": "x > 1"},
        {"source": 'say "hi" <now>', "target": "end"},
    ],
})


def test_every_node_and_edge_is_drawn_with_safe_ids_and_escaped_labels() -> None:
    text = mermaid(Graph(BLUEPRINT))
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    assert 'n0["start<br/><small>a</small>"]' in text
    assert 'n1["say #quot;hi#quot; &lt;now&gt;<br/><small>b</small>"]' in text
    assert '    n0 -->|"go / x &gt; 1"| n1' in lines
    assert "    n1 --> n2" in lines
    assert "classDef" not in text


def test_states_colour_the_nodes_and_unreached_ones_are_marked_not_run() -> None:
    text = mermaid(Graph(BLUEPRINT), {"start": "succeeded", 'say "hi" <now>': "failed"})
    classes = {name: ids for ids, name in re.findall(r"^    class (\S+) (\S+)$", text, re.MULTILINE)}
    assert classes == {"st_succeeded": "n0", "st_failed": "n1", "st_not_run": "n2"}
    assert re.search(r"classDef st_failed fill:#f8d7da", text)
