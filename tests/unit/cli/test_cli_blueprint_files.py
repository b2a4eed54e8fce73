"""`validate` and `run --local` among other files, as a user runs them: only the blueprints a flow
references are read, a bad one is one line naming it, `module:attr` works, no traceback escapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from flowcraft_celery.cli.main import main

FLOW = {"id": "order", "nodes": [{"id": "take", "uses": "wait"},
                                 {"id": "pay", "uses": "subflow", "params": {"blueprintId": "payment"}}],
        "edges": [{"source": "take", "target": "pay"}]}
PAYMENT = {"id": "payment", "nodes": [{"id": "charge", "uses": "sleep", "params": {"duration": 1}}], "edges": []}

FLOWS_MODULE = '''
from flowcraft_celery import Flow

flow = Flow("greeting").node("hello", "sleep", params={"duration": 1}).node("bye", "sleep", params={"duration": 1}) \\
    .chain("hello", "bye")
flows = [flow, Flow("other").node("x", "wait")]


def exploding():
    return 1 / 0
'''


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env or {"FLOWCRAFT_BLUEPRINTS": ""})


def write(folder: Path, name: str, document: Any) -> Path:
    path = folder / name
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    return path


def one_error_line(result: Result) -> str:
    """The single `Error: ...` line a failing command prints (and no traceback)."""
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A project folder: the flow, its subflow, and files that are not blueprints."""
    write(tmp_path, "order.json", FLOW)
    write(tmp_path, "payment.json", PAYMENT)
    write(tmp_path, "package.json", {"name": "shop", "version": "1.0.0", "dependencies": {}})
    write(tmp_path, "deep.json", "[" * 100_000 + "]" * 100_000)
    # 15 MB that would take seconds to parse, and is broken at its end: reading it would fail
    write(tmp_path, "huge.json", '{"id": "huge", "nodes": [' + ",".join(['{"id": "n", "uses": "u"}'] * 600_000) + "]")
    return tmp_path


def test_validate_reads_only_the_referenced_subflow(folder: Path) -> None:
    result = cli("validate", str(folder / "order.json"))
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "order: 0 error(s), 0 warning(s)"


def test_run_local_reads_only_the_referenced_subflow(folder: Path) -> None:
    result = cli("run", "--local", str(folder / "order.json"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "awaiting"


@pytest.mark.parametrize(("content", "fault"), [
    ({"name": "not a blueprint"}, "$.nodes: is required"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("{oops", "not JSON"),
    (b"\xff\xfe{}".decode("latin-1"), "not JSON"),
])
def test_a_broken_subflow_file_is_one_line_naming_it(folder: Path, content: Any, fault: str) -> None:
    write(folder, "payment.json", content)
    for args, code in ((["validate"], 1), (["run", "--local"], 2)):
        result = cli(*args, str(folder / "order.json"))
        line = one_error_line(result)
        assert result.exit_code == code
        assert "payment.json" in line and fault in line


def test_a_subflow_file_declaring_another_id_says_how_to_fix_it(folder: Path) -> None:
    write(folder, "payment.json", {**PAYMENT, "id": "billing"})
    line = one_error_line(cli("validate", str(folder / "order.json")))
    assert "payment.json" in line and "'billing'" in line and "rename" in line


def test_a_missing_subflow_is_a_validation_error_not_a_crash(folder: Path) -> None:
    (folder / "payment.json").unlink()
    result = cli("validate", str(folder / "order.json"))
    assert result.exit_code == 1
    assert "INVALID_SUBFLOW_BLUEPRINT_ID" in result.output and "'payment'" in result.output
    assert f"looked for {folder / 'payment.json'}; name more folders with --blueprints" in result.output


def test_the_flow_file_itself_broken_is_one_line(folder: Path) -> None:
    line = one_error_line(cli("validate", str(folder / "deep.json")))
    assert "deep.json" in line and "nested too deeply" in line


def test_subflows_come_from_blueprints_option_or_the_setting(folder: Path, tmp_path_factory: pytest.TempPathFactory
                                                             ) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    flow = write(elsewhere, "order.json", FLOW)
    assert cli("validate", str(flow)).exit_code == 1
    assert cli("validate", "--blueprints", str(folder), str(flow)).exit_code == 0
    assert cli("validate", str(flow), env={"FLOWCRAFT_BLUEPRINTS": str(folder)}).exit_code == 0


def test_module_attr_is_accepted_like_in_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "myflows.py", FLOWS_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = cli("validate", "myflows:flow")
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "greeting: 0 error(s), 0 warning(s)"
    every = cli("validate", "myflows:flows")
    assert every.exit_code == 0 and "other: 0 error(s)" in every.output
    ran = cli("run", "--local", "myflows:flows", "--id", "greeting")
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout)["status"] == "completed"
    assert "--id" in one_error_line(cli("run", "--local", "myflows:flows"))
    assert "has no attribute 'missing'" in one_error_line(cli("validate", "myflows:missing"))
    assert "cannot import module 'nosuchmodule'" in one_error_line(cli("validate", "nosuchmodule:flow"))


def test_a_path_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("validate", str(tmp_path / "nope.json"))
    assert result.exit_code == 2
    assert "no such file" in one_error_line(result)


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "myflows.py", FLOWS_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = cli("validate", "myflows:exploding")
    assert result.exit_code == 70
    assert "ZeroDivisionError" in one_error_line(result) and "--debug" in result.output
    debug = cli("validate", "myflows:exploding", "--debug")
    assert isinstance(debug.exception, ZeroDivisionError)
    assert isinstance(cli("--debug", "validate", "myflows:exploding").exception, ZeroDivisionError)


def test_help_documents_the_exit_codes() -> None:
    text = " ".join(cli("--help").output.split())
    for words in ("0 success", "1 what was checked failed", "2 bad command line", "3 a setting is missing",
                  "4 a service cannot be reached", "5 --wait timed out", "70 unexpected error"):
        assert words in text
