"""Ids every store accepts, printing them safely, recursive subflows and unbounded cycles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.catalog import CatalogError, load_blueprints
from flowcraft_celery.model.ids import InvalidIdError, check_id
from flowcraft_celery.model.printable import printable
from flowcraft_celery.model.validation import validate


def bp(blueprint_id: str, nodes: list[dict[str, object]], edges: list[dict[str, str]] | None = None,
       **metadata: object) -> Blueprint:
    return Blueprint.from_dict({"id": blueprint_id, "nodes": nodes, "edges": edges or [], "metadata": metadata})


def codes(blueprint: Blueprint, blueprints: dict[str, Blueprint] | None = None) -> list[str]:
    return [i.code for i in validate(blueprint, None, blueprints) if i.severity == "error"]


@pytest.mark.parametrize("bad", ["a/b", "a\\b", "a?b", "a#b", "a\nb", "a\rb", "a\x00b", "a\u2028b", "x" * 256])
def test_ids_stores_refuse_are_invalid(bad: str) -> None:
    assert codes(bp("ok", [{"id": bad, "uses": "w"}])) == ["INVALID_ID"]
    assert codes(bp(bad, [{"id": "n", "uses": "w"}])) == ["INVALID_ID"]
    with pytest.raises(InvalidIdError, match="INVALID_ID: run id"):
        check_id("run", bad)


def test_ordinary_ids_are_valid() -> None:
    assert check_id("run", "order-2026.11:x@y " + "é" * 10)
    assert codes(bp("scenario:flow", [{"id": "n" * 255, "uses": "w"}])) == []


def test_printable_escapes_control_characters_and_cuts_long_text() -> None:
    assert printable("a\nb\x1b[31m\x00") == "a\\nb\\x1b[31m\\x00"
    assert "\n" not in printable("x\r\n" * 10)
    assert printable("y" * 5000).endswith("(5000 chars)")


def test_subflow_including_itself_is_an_error() -> None:
    selfie = bp("a", [{"id": "again", "uses": "subflow", "params": {"blueprintId": "a"}}])
    issues = [i for i in validate(selfie, None, {}) if i.code == "RECURSIVE_SUBFLOW"]
    assert len(issues) == 1 and "'a' -> 'a'" in issues[0].message and issues[0].node_id == "again"


def test_subflows_including_each_other_are_an_error_naming_the_chain() -> None:
    a = bp("a", [{"id": "to_b", "uses": "subflow", "params": {"blueprintId": "b"}}])
    b = bp("b", [{"id": "to_c", "uses": "subflow", "params": {"blueprintId": "c"}}])
    c = bp("c", [{"id": "to_a", "uses": "subflow", "params": {"blueprintId": "a"}}])
    issues = [i for i in validate(a, None, {"a": a, "b": b, "c": c}) if i.code == "RECURSIVE_SUBFLOW"]
    assert len(issues) == 1 and "'a' -> 'b' -> 'c' -> 'a'" in issues[0].message


def test_non_recursive_subflows_are_fine() -> None:
    a = bp("a", [{"id": "x", "uses": "subflow", "params": {"blueprintId": "b"}},
                 {"id": "y", "uses": "subflow", "params": {"blueprintId": "b"}}])
    b = bp("b", [{"id": "w", "uses": "w"}])
    assert codes(a, {"a": a, "b": b}) == []


def test_cycle_without_controller_needs_an_explicit_bound() -> None:
    nodes = [{"id": "a", "uses": "w"}, {"id": "b", "uses": "w"}]
    edges = [{"source": "a", "target": "b"}, {"source": "b", "target": "a"}]
    assert codes(bp("c", nodes, edges)) == ["CYCLE_WITHOUT_LOOP_CONTROLLER"]
    assert codes(bp("c", nodes, edges, maxIterations=10)) == []
    assert codes(bp("c", nodes, edges, maxIterations=0)) == ["INVALID_CONFIG", "CYCLE_WITHOUT_LOOP_CONTROLLER"]


def test_cycle_inside_a_loop_body_that_skips_the_controller_is_an_error() -> None:
    nodes = [{"id": "s", "uses": "w"}, {"id": "ctl", "uses": "loop-controller", "params": {"condition": "x"}},
             {"id": "a", "uses": "w"}, {"id": "b", "uses": "w"}]
    edges = [{"source": "s", "target": "ctl"}, {"source": "ctl", "target": "a", "action": "continue"},
             {"source": "a", "target": "b"}, {"source": "b", "target": "a"}, {"source": "b", "target": "ctl"}]
    issues = [i for i in validate(bp("c", nodes, edges)) if i.code == "CYCLE_WITHOUT_LOOP_CONTROLLER"]
    assert len(issues) == 1 and "'a', 'b'" in issues[0].message


def test_a_blueprint_without_version_is_versioned_by_its_content() -> None:
    one = bp("f", [{"id": "a", "uses": "w"}])
    same = bp("f", [{"id": "a", "uses": "w"}])
    edited = bp("f", [{"id": "a", "uses": "w", "params": {"x": 1}}])
    assert one.run_version == same.run_version and one.run_version.startswith("sha256:")
    assert edited.run_version != one.run_version
    assert bp("f", [{"id": "a", "uses": "w"}], version=3).run_version == "3"


def test_duplicate_blueprint_ids_across_sources_name_both(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    (first / "a.json").write_text(json.dumps({"id": "flow", "nodes": [{"id": "x", "uses": "w"}], "edges": []}))
    (second / "b.json").write_text(json.dumps({"id": "flow", "nodes": [{"id": "y", "uses": "w"}], "edges": []}))
    with pytest.raises(CatalogError, match=r"'flow' is defined twice.*one/a\.json.*two/b\.json"):
        load_blueprints([str(first), str(second)])
    assert list(load_blueprints([str(first), str(first / "a.json")])) == ["flow"]
