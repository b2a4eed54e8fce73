"""The blueprint model: example documents round-trip, malformed ones are named by JSON path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flowcraft_celery.model.blueprint import Blueprint, BlueprintFormatError

EXAMPLES = Path(__file__).resolve().parents[2] / "blueprints"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json"))


def test_example_blueprints_are_present() -> None:
    assert len(EXAMPLE_FILES) >= 9


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_blueprint_round_trips(path: Path) -> None:
    original = json.loads(path.read_text(encoding="utf-8"))
    blueprint = Blueprint.load(path)
    assert blueprint.id == path.stem
    assert blueprint.to_dict() == {**original, "id": path.stem}
    assert Blueprint.loads(blueprint.dumps()).to_dict() == blueprint.to_dict()


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_blueprint_keeps_node_and_edge_order(path: Path) -> None:
    original = json.loads(path.read_text(encoding="utf-8"))
    dumped = Blueprint.load(path).to_dict()
    assert [n["id"] for n in dumped["nodes"]] == [n["id"] for n in original["nodes"]]
    assert [(e["source"], e["target"]) for e in dumped["edges"]] == [
        (e["source"], e["target"]) for e in original["edges"]
    ]


def test_id_override_replaces_the_file_stem(tmp_path: Path) -> None:
    file = tmp_path / "support.json"
    file.write_text((EXAMPLES / "support.json").read_text(encoding="utf-8"), encoding="utf-8")
    assert Blueprint.load(file, blueprint_id="hiring").id == "hiring"
    assert Blueprint.load(file, blueprint_id="hiring").to_dict()["id"] == "hiring"


def test_id_in_document_wins_over_file_stem(tmp_path: Path) -> None:
    file = tmp_path / "stem.json"
    file.write_text(json.dumps({"id": "inside", "nodes": [], "edges": []}), encoding="utf-8")
    assert Blueprint.load(file).id == "inside"
    assert Blueprint.load(file, blueprint_id="override").id == "override"


def test_unknown_fields_are_kept_everywhere() -> None:
    document: dict[str, Any] = {
        "id": "x",
        "nodes": [
            {"id": "a", "uses": "u", "_sourceLocation": {"line": 3}, "label": "A",
             "config": {"maxRetries": 2, "priority": "high"}},
            {"id": "b", "uses": "u", "params": {}, "config": {}},
        ],
        "edges": [{"source": "a", "target": "b", "style": "dashed"}],
        "metadata": {"version": "3", "owner": "team"},
        "x-vendor": [1, 2],
    }
    assert Blueprint.from_dict(document).to_dict() == document


def test_config_fields_are_read_with_defaults() -> None:
    blueprint = Blueprint.from_dict({"id": "x", "nodes": [
        {"id": "a", "uses": "u", "config": {"maxRetries": 3, "retryDelay": 250, "timeout": 1500,
                                            "fallback": "b", "joinStrategy": "any", "queue": "heavy"}},
        {"id": "b", "uses": "u"},
    ], "edges": []})
    a, b = blueprint.node("a").config, blueprint.node("b").config
    assert (a.attempts, a.delay_seconds, a.timeout_seconds, a.fallback, a.join, a.queue) == (
        3, 0.25, 1.5, "b", "any", "heavy")
    assert (b.attempts, b.delay_seconds, b.timeout_seconds, b.join) == (1, 0.0, None, "all")


def test_version_comes_from_metadata() -> None:
    assert Blueprint.from_dict({"id": "x", "nodes": [], "edges": [], "metadata": {"version": 3}}).version == "3"
    assert Blueprint.from_dict({"id": "x", "nodes": [], "edges": []}).version is None


def test_node_lookup_names_the_missing_node() -> None:
    blueprint = Blueprint.from_dict({"id": "x", "nodes": [], "edges": []})
    with pytest.raises(KeyError, match="nope"):
        blueprint.node("nope")


def test_not_json_is_a_format_error_at_the_root() -> None:
    with pytest.raises(BlueprintFormatError) as info:
        Blueprint.loads("{nodes: [")
    assert info.value.path == "$"
    assert "not JSON" in str(info.value)
    assert info.value.code == "MALFORMED_BLUEPRINT"


def test_file_that_is_not_json_is_a_format_error(tmp_path: Path) -> None:
    file = tmp_path / "bad.json"
    file.write_text("not json at all", encoding="utf-8")
    with pytest.raises(BlueprintFormatError) as info:
        Blueprint.load(file)
    assert info.value.path == "$"


GOOD_NODE: dict[str, Any] = {"id": "a", "uses": "u"}

MALFORMED: list[tuple[str, Any, str, str]] = [
    ("document-array", [], "$", "object"),
    ("missing-id", {"nodes": [], "edges": []}, "$.id", "required"),
    ("empty-id", {"id": "", "nodes": [], "edges": []}, "$.id", "empty"),
    ("id-number", {"id": 7, "nodes": [], "edges": []}, "$.id", "string"),
    ("missing-nodes", {"id": "x", "edges": []}, "$.nodes", "required"),
    ("missing-edges", {"id": "x", "nodes": []}, "$.edges", "required"),
    ("nodes-object", {"id": "x", "nodes": {"a": GOOD_NODE}, "edges": []}, "$.nodes", "array"),
    ("edges-string", {"id": "x", "nodes": [], "edges": "a->b"}, "$.edges", "array"),
    ("node-not-object", {"id": "x", "nodes": ["a"], "edges": []}, "$.nodes[0]", "object"),
    ("node-id-number", {"id": "x", "nodes": [GOOD_NODE, {"id": 5, "uses": "u"}], "edges": []},
     "$.nodes[1].id", "string"),
    ("node-id-missing", {"id": "x", "nodes": [{"uses": "u"}], "edges": []}, "$.nodes[0].id", "required"),
    ("node-id-empty", {"id": "x", "nodes": [{"id": "", "uses": "u"}], "edges": []}, "$.nodes[0].id", "empty"),
    ("uses-missing", {"id": "x", "nodes": [{"id": "a"}], "edges": []}, "$.nodes[0].uses", "required"),
    ("uses-list", {"id": "x", "nodes": [{"id": "a", "uses": ["u"]}], "edges": []}, "$.nodes[0].uses", "string"),
    ("params-list", {"id": "x", "nodes": [{**GOOD_NODE, "params": [1]}], "edges": []},
     "$.nodes[0].params", "object"),
    ("max-retries-string", {"id": "x", "nodes": [{**GOOD_NODE, "config": {"maxRetries": "3"}}], "edges": []},
     "$.nodes[0].config.maxRetries", "integer"),
    ("max-retries-bool", {"id": "x", "nodes": [{**GOOD_NODE, "config": {"maxRetries": True}}], "edges": []},
     "$.nodes[0].config.maxRetries", "integer"),
    ("max-retries-float", {"id": "x", "nodes": [{**GOOD_NODE, "config": {"maxRetries": 1.5}}], "edges": []},
     "$.nodes[0].config.maxRetries", "integer"),
    ("retry-delay-string", {"id": "x", "nodes": [{**GOOD_NODE, "config": {"retryDelay": "1s"}}], "edges": []},
     "$.nodes[0].config.retryDelay", "number"),
    ("timeout-bool", {"id": "x", "nodes": [{**GOOD_NODE, "config": {"timeout": False}}], "edges": []},
     "$.nodes[0].config.timeout", "number"),
    ("fallback-number", {"id": "x", "nodes": [{**GOOD_NODE, "config": {"fallback": 1}}], "edges": []},
     "$.nodes[0].config.fallback", "string"),
    ("join-strategy-list", {"id": "x", "nodes": [{**GOOD_NODE, "config": {"joinStrategy": ["all"]}}],
                            "edges": []}, "$.nodes[0].config.joinStrategy", "all"),
    ("config-string", {"id": "x", "nodes": [{**GOOD_NODE, "config": "fast"}], "edges": []},
     "$.nodes[0].config", "object"),
    ("inputs-array", {"id": "x", "nodes": [{**GOOD_NODE, "inputs": ["a", "b"]}], "edges": []},
     "$.nodes[0].inputs", "string or an object"),
    ("inputs-object-of-number", {"id": "x", "nodes": [{**GOOD_NODE, "inputs": {"k": 1}}], "edges": []},
     "$.nodes[0].inputs.k", "string"),
    ("edge-not-object", {"id": "x", "nodes": [GOOD_NODE], "edges": [["a", "a"]]}, "$.edges[0]", "object"),
    ("edge-source-missing", {"id": "x", "nodes": [GOOD_NODE], "edges": [{"target": "a"}]},
     "$.edges[0].source", "required"),
    ("edge-target-number", {"id": "x", "nodes": [GOOD_NODE], "edges": [{"source": "a", "target": 2}]},
     "$.edges[0].target", "string"),
    ("edge-action-number", {"id": "x", "nodes": [GOOD_NODE],
                            "edges": [{"source": "a", "target": "a", "action": 1}]}, "$.edges[0].action", "string"),
    ("edge-condition-bool", {"id": "x", "nodes": [GOOD_NODE],
                             "edges": [{"source": "a", "target": "a", "condition": True}]},
     "$.edges[0].condition", "expression"),
    ("edge-transform-object", {"id": "x", "nodes": [GOOD_NODE],
                               "edges": [{"source": "a", "target": "a", "transform": {}}]},
     "$.edges[0].transform", "expression"),
    ("metadata-list", {"id": "x", "nodes": [], "edges": [], "metadata": []}, "$.metadata", "object"),
]


@pytest.mark.parametrize(("document", "path", "words"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_document_names_its_json_path(document: Any, path: str, words: str) -> None:
    with pytest.raises(BlueprintFormatError) as info:
        Blueprint.from_dict(document)
    assert info.value.path == path
    assert path in str(info.value)
    assert words in info.value.detail


def test_malformed_text_is_reported_with_its_path_through_loads() -> None:
    with pytest.raises(BlueprintFormatError, match=r"\$\.nodes\[0\]\.config\.maxRetries"):
        Blueprint.loads(json.dumps({"id": "x", "nodes": [{"id": "a", "uses": "u", "config": {"maxRetries": "2"}}],
                                    "edges": []}))


def test_default_id_names_a_document_without_one() -> None:
    assert Blueprint.from_dict({"nodes": [], "edges": []}, default_id="stem").id == "stem"


def test_null_optional_fields_are_treated_as_absent() -> None:
    blueprint = Blueprint.from_dict({"id": "x", "nodes": [{"id": "a", "uses": "u", "params": None, "config": None,
                                                          "inputs": None}], "edges": [], "metadata": None})
    node = blueprint.node("a")
    assert (node.params, node.inputs, node.config.attempts, blueprint.metadata) == ({}, None, 1, {})
