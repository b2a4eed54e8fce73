"""Blueprints with a duplicate key or a non-finite number are refused, naming the JSON path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowcraft_celery import Flow
from flowcraft_celery.cli.main import main
from flowcraft_celery.model.blueprint import Blueprint, BlueprintFormatError, NodeDefinition
from flowcraft_celery.model.catalog import CatalogError, load_blueprints
from flowcraft_celery.model.validation import validate

GOOD = '{"id": "bp", "nodes": [{"id": "a", "uses": "u", "params": {"n": 1}}], "edges": []}'


@pytest.mark.parametrize(("text", "path", "words"), [
    (GOOD.replace('"uses": "u"', '"uses": "u", "uses": "v"'), "$.nodes[0].uses", "more than once"),
    ('{"id": "bp", "id": "bq", "nodes": [], "edges": []}', "$.id", "more than once"),
    (GOOD.replace('"n": 1', '"n": 1, "n": 2'), "$.nodes[0].params.n", "more than once"),
    (GOOD.replace('"n": 1', '"n": NaN'), "$.nodes[0].params.n", "NaN"),
    (GOOD.replace('"n": 1', '"n": [0, Infinity]'), "$.nodes[0].params.n[1]", "Infinity"),
    (GOOD.replace('"n": 1', '"a b": -Infinity'), '$.nodes[0].params["a b"]', "-Infinity"),
    (GOOD.replace('"n": 1', '"n": 1e400'), "$.nodes[0].params.n", "Infinity"),
    (GOOD.replace('"edges": []', '"edges": [], "metadata": {"x": {"y": NaN}}'), "$.metadata.x.y", "NaN"),
])
def test_duplicate_keys_and_non_finite_numbers_are_refused_naming_the_path(text: str, path: str,
                                                                             words: str) -> None:
    with pytest.raises(BlueprintFormatError) as refused:
        Blueprint.loads(text)
    assert refused.value.path == path and words in str(refused.value)


def test_validate_refuses_them_in_one_line_with_the_path(tmp_path: Path) -> None:
    file = tmp_path / "bp.json"
    file.write_text('{"id": "bp", "nodes": [{"id": "a", "uses": "u", "uses": "v"}], "edges": []}')
    result = CliRunner().invoke(main, ["validate", str(file)])
    assert result.exit_code != 0 and "$.nodes[0].uses" in result.output and "more than once" in result.output
    file.write_text(GOOD.replace('"n": 1', '"n": NaN'))
    result = CliRunner().invoke(main, ["validate", str(file)])
    assert result.exit_code != 0 and "$.nodes[0].params.n" in result.output and "NaN" in result.output
    file.write_text(GOOD)
    assert CliRunner().invoke(main, ["validate", str(file)]).exit_code == 0


def test_a_catalog_file_with_a_duplicate_key_is_a_setting_error(tmp_path: Path) -> None:
    (tmp_path / "bp.json").write_text(GOOD.replace('"uses": "u"', '"uses": "u", "uses": "w"'))
    with pytest.raises(CatalogError, match=r"\$\.nodes\[0\]\.uses"):
        load_blueprints([str(tmp_path)])


def test_a_flow_built_in_python_with_nan_is_refused_at_build() -> None:
    with pytest.raises(BlueprintFormatError, match=r"\$\.nodes\[0\]\.params\.limit"):
        Flow("bp").node("a", uses="u", params={"limit": math.nan}).build()


def test_validation_reports_a_non_finite_number_of_a_blueprint_made_directly() -> None:
    blueprint = Blueprint("bp", [NodeDefinition(id="a", uses="u", params={"x": [math.inf]})], [])
    issues = [i for i in validate(blueprint) if i.code == "INVALID_NUMBER"]
    assert len(issues) == 1 and "$.nodes[0].params.x[0]" in issues[0].message
    assert json.loads(GOOD)  # the good document stays good
    assert not [i for i in validate(Blueprint.loads(GOOD)) if i.code == "INVALID_NUMBER"]
