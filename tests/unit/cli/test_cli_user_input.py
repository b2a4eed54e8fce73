"""What the CLI says of runs in their final states, `@FILE` JSON options, and hostile values in its output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowcraft_celery.cli.main import main
from flowcraft_celery.cli.output import status_lines

ONE = {"id": "one", "nodes": [{"id": "w", "uses": "wait"}], "edges": []}


def status_of(doc: dict[str, object]) -> dict[str, str]:
    return dict(line.split(None, 1) for line in status_lines(doc))


@pytest.mark.parametrize("final", ["cancelled", "failed", "completed", "stalled"])
def test_a_run_in_a_final_state_is_never_said_to_await_a_resume(final: str) -> None:
    doc = {"runId": "r1", "blueprintId": "bp", "status": final, "awaiting": ["approve@0"], "createdAt": 1.0,
           "lastUpdated": 2.0}
    lines = status_of(doc)
    assert "awaiting" not in lines and "flowcraft-celery resume" not in "\n".join(status_lines(doc))
    assert lines["awaited"] == f"approve (iteration 0)  (never resumed: the run {final})"
    assert "continue with" in status_of({**doc, "status": "awaiting"})["awaiting"]


def test_status_lines_escape_hostile_values() -> None:
    doc = {"runId": "r\r\nFORGED\x1b[2J", "blueprintId": "b\x00" * 300, "status": "awaiting",
           "awaiting": ["n\n@0"], "parentRunId": "p\x1b", "parentNodeId": "q",
           "errors": [{"nodeId": "x\r", "message": "m\n"}]}
    text = "\n".join(status_lines(doc))
    assert not any(c in text for c in "\r\x1b\x00") and len(text.splitlines()) == len(status_lines(doc))
    assert "r\\r\\nFORGED\\x1b[2J" in text and "...(600 chars)" in text


def test_context_at_file_reads_json_from_the_file(tmp_path: Path) -> None:
    flow = tmp_path / "one.json"
    flow.write_text(json.dumps(ONE))
    context = tmp_path / "context.json"
    context.write_text('{"order": {"id": 7}}')
    result = CliRunner().invoke(main, ["run", str(flow), "--local", "--context", f"@{context}"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["context"]["order"] == {"id": 7}


@pytest.mark.parametrize(("content", "words"), [
    (None, ["cannot read file", "No such file or directory"]),
    ("{not json", ["is not valid JSON", "line 1"]),
    ("[1, 2]", ["must be a JSON object"]),
    ('{"x": NaN}', ["NaN"]),
])
def test_a_missing_or_bad_context_file_is_one_line_naming_it(tmp_path: Path, content: str | None,
                                                             words: list[str]) -> None:
    flow = tmp_path / "one.json"
    flow.write_text(json.dumps(ONE))
    context = tmp_path / "context.json"
    if content is not None:
        context.write_text(content)
    result = CliRunner().invoke(main, ["run", str(flow), "--local", "--context", f"@{context}"])
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "--context" in error[0] and all(w in error[0] for w in words), result.output
    if content is None or "not json" in content:
        assert str(context) in error[0]


def test_resume_output_at_file_is_read_before_any_service_is_asked(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["resume", "r1", "--output", f"@{tmp_path / 'missing.json'}"])
    assert result.exit_code == 2 and "cannot read file" in result.output and "--output" in result.output


def test_a_hostile_value_in_an_error_stays_on_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["graph", str(tmp_path / "x\r\nERROR forged\x1b[2J") + "\x00" * 3 + "y" * 5000])
    assert result.exit_code != 0
    assert not any(c in result.output for c in "\r\x1b\x00")
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and len(lines[0]) < 2100, lines


def test_graph_of_a_blueprint_with_a_nul_in_a_node_id_prints_it_escaped(tmp_path: Path) -> None:
    path = tmp_path / "nul.json"
    path.write_text(json.dumps({"id": "nul", "nodes": [{"id": "a\x00b", "uses": "wait\x1b[2J"}], "edges": []}))
    result = CliRunner().invoke(main, ["graph", str(path)])
    assert result.exit_code == 0, result.output
    assert "\x00" not in result.output and "\x1b" not in result.output and "a\\x00b" in result.output
