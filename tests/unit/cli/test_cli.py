"""The command line (click's CliRunner): validate, run --local and conformance, as a user sees them."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from flowcraft_celery.cli.main import main

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios" / "reference.json"
EXAMPLES = Path(__file__).resolve().parents[2] / "blueprints"

NODES_MODULE = '''
from flowcraft_celery.engine.registry import node


@node("clitest-echo")
def echo(ctx):
    return ctx.input if ctx.input is not None else ctx.context.get("greeting")


@node("clitest-fail")
def fail(ctx):
    raise RuntimeError(f"boom {ctx.node_id}")
'''


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def write(folder: Path, name: str, document: Any) -> Path:
    path = folder / name
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.fixture
def nodes_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module defining `clitest-*` nodes, importable from the working directory like a user's."""
    (tmp_path / "clitest_nodes.py").write_text(NODES_MODULE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "clitest_nodes"


def chain(*uses: str, blueprint_id: str = "cli") -> dict[str, Any]:
    ids = [f"n{i}" for i in range(len(uses))]
    return {"id": blueprint_id, "nodes": [{"id": i, "uses": u} for i, u in zip(ids, uses, strict=True)],
            "edges": [{"source": a, "target": b} for a, b in itertools.pairwise(ids)]}


# -- validate ----------------------------------------------------------------------------------


def test_validate_clean_blueprint_exits_0(tmp_path: Path) -> None:
    result = invoke("validate", str(write(tmp_path, "ok.json", chain("a", "b"))))
    assert result.exit_code == 0
    assert result.output.strip().splitlines()[-1] == "cli: 0 error(s), 0 warning(s)"


def test_validate_prints_every_issue_and_exits_1(tmp_path: Path) -> None:
    document = {"id": "bad", "nodes": [{"id": "a", "uses": "u"}, {"id": "a", "uses": "u"},
                                       {"id": "b", "uses": "u", "config": {"maxRetries": 0}},
                                       {"id": "x", "uses": "u"}, {"id": "y", "uses": "u"}],
                "edges": [{"source": "a", "target": "ghost"}, {"source": "a", "target": "b", "condition": "(("},
                          {"source": "x", "target": "y"}, {"source": "y", "target": "x"}]}
    result = invoke("validate", str(write(tmp_path, "bad.json", document)))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    for code in ("DUPLICATE_NODE_ID", "INVALID_EDGE_TARGET", "INVALID_EXPRESSION", "INVALID_CONFIG",
                 "CYCLE_WITHOUT_LOOP_CONTROLLER"):
        assert any(line.startswith(f"ERROR {code}: ") for line in lines), code
    assert any(line.startswith("WARNING ORPHAN_NODE: ") and "'x'" in line for line in lines)
    assert any("ghost" in line for line in lines)
    assert lines[-1] == "bad: 5 error(s), 2 warning(s)"


def test_validate_warnings_only_exits_0(tmp_path: Path) -> None:
    document = {"id": "w", "nodes": [{"id": "a", "uses": "u"}, {"id": "x", "uses": "u"}, {"id": "y", "uses": "u"}],
                "edges": [{"source": "x", "target": "y"}, {"source": "y", "target": "x"}],
                "metadata": {"maxIterations": 5}}
    result = invoke("validate", str(write(tmp_path, "w.json", document)))
    assert result.exit_code == 0
    assert "WARNING ORPHAN_NODE" in result.output


def test_validate_json_output(tmp_path: Path) -> None:
    document = {"id": "j", "nodes": [{"id": "a", "uses": "u"}], "edges": [{"source": "a", "target": "zz"}]}
    result = invoke("validate", "--json", str(write(tmp_path, "j.json", document)))
    assert result.exit_code == 1
    issues = json.loads(result.stdout)
    assert [(i["code"], i["severity"], i.get("edge")) for i in issues] == [("INVALID_EDGE_TARGET", "error", "a -> zz")]


def test_validate_with_registry_reports_unknown_uses(tmp_path: Path, nodes_module: str) -> None:
    path = write(tmp_path, "r.json", chain("clitest-echo", "nobody-knows-me"))
    result = invoke("validate", "--registry", nodes_module, str(path))
    assert result.exit_code == 1
    assert "MISSING_NODE_IMPLEMENTATION" in result.output and "nobody-knows-me" in result.output
    assert "clitest-echo" not in result.output


def test_validate_example_blueprint_with_its_siblings(tmp_path: Path) -> None:
    result = invoke("validate", str(EXAMPLES / "moderation.json"))
    assert result.exit_code == 0
    assert result.output.strip().splitlines()[-1] == "moderation: 0 error(s), 0 warning(s)"


def test_validate_reports_a_subflow_whose_sibling_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "support.json"
    path.write_text((EXAMPLES / "support.json").read_text(encoding="utf-8"), encoding="utf-8")
    result = invoke("validate", str(path))
    assert result.exit_code == 1
    assert "INVALID_SUBFLOW_BLUEPRINT_ID" in result.output and "'escalate'" in result.output


def test_validate_id_override(tmp_path: Path) -> None:
    result = invoke("validate", "--id", "renamed", str(EXAMPLES / "article.json"))
    assert result.exit_code == 0
    assert result.output.strip().splitlines()[-1].startswith("renamed: ")


def test_validate_malformed_file_names_the_json_path(tmp_path: Path) -> None:
    path = write(tmp_path, "m.json", {"id": "m", "nodes": [{"id": "a", "uses": "u", "inputs": [1]}], "edges": []})
    result = invoke("validate", str(path))
    assert result.exit_code == 1
    assert "$.nodes[0].inputs" in result.output and "m.json" in result.output


def test_validate_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "n.json"
    path.write_text("{oops", encoding="utf-8")
    result = invoke("validate", str(path))
    assert result.exit_code == 1
    assert "not JSON" in result.output


# -- run --local ---------------------------------------------------------------------------------


def test_run_local_prints_the_result_as_json(tmp_path: Path, nodes_module: str) -> None:
    path = write(tmp_path, "ok.json", chain("clitest-echo", "clitest-echo"))
    result = invoke("run", "--local", "--registry", nodes_module, "--context", '{"greeting": "hi"}', str(path))
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["status"] == "completed"
    assert printed["context"]["_outputs.n1"] == "hi"
    assert printed["errors"] == []
    assert printed["runId"]


def test_run_local_failed_run_exits_1_with_the_error(tmp_path: Path, nodes_module: str) -> None:
    path = write(tmp_path, "f.json", chain("clitest-echo", "clitest-fail", "clitest-echo"))
    result = invoke("run", "--local", "--registry", nodes_module, str(path))
    assert result.exit_code == 1
    printed = json.loads(result.stdout)
    assert printed["status"] == "failed"
    assert printed["errors"][0]["nodeId"] == "n1"
    assert printed["errors"][0]["message"] == "boom n1"
    assert "_outputs.n2" not in printed["context"]


def test_run_local_awaiting_run_exits_0(tmp_path: Path) -> None:
    path = write(tmp_path, "a.json", {"id": "a", "nodes": [{"id": "w", "uses": "wait"}], "edges": []})
    result = invoke("run", "--local", str(path))
    assert result.exit_code == 0
    assert json.loads(result.stdout)["status"] == "awaiting"


def test_run_local_events_go_to_stderr(tmp_path: Path) -> None:
    path = write(tmp_path, "a.json", {"id": "a", "nodes": [{"id": "w", "uses": "wait"}], "edges": []})
    result = CliRunner().invoke(main, ["run", "--local", "--events", str(path)])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["status"] == "awaiting"
    assert "workflow:start" in result.stderr and "node:start" in result.stderr


@pytest.mark.parametrize("value", ["{not json", "[1, 2]"])
def test_run_local_bad_context_names_the_option(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, "a.json", {"id": "a", "nodes": [{"id": "w", "uses": "wait"}], "edges": []})
    result = invoke("run", "--local", "--context", value, str(path))
    assert result.exit_code == 2
    assert "--context" in result.output


def test_run_local_invalid_blueprint_is_refused_with_its_issues(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.json", {"id": "bad", "nodes": [{"id": "a", "uses": "wait"}],
                                        "edges": [{"source": "a", "target": "ghost"}]})
    result = invoke("run", "--local", str(path))
    assert result.exit_code != 0
    assert "INVALID_EDGE_TARGET" in result.output
    assert '"status"' not in result.output


def test_run_local_invalid_blueprint_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.json", {"id": "bad", "nodes": [{"id": "a", "uses": "wait"}],
                                        "edges": [{"source": "a", "target": "ghost"}]})
    assert invoke("run", "--local", str(path)).exit_code == 2


# -- conformance ---------------------------------------------------------------------------------


def test_conformance_on_the_shared_scenarios_passes() -> None:
    result = invoke("conformance", str(SCENARIOS))
    lines = result.output.strip().splitlines()
    assert lines[-1] == "20 passed, 0 failed"
    assert sum(line.startswith("PASS ") for line in lines) == 20
    assert result.exit_code == 0


def test_conformance_reports_a_wrong_expectation(tmp_path: Path) -> None:
    scenarios = [
        {"name": "right", "blueprint": {"id": "r", "nodes": [{"id": "a", "uses": "c"}], "edges": []},
         "implementations": {"c": {"kind": "const", "output": 1}}, "expect": {"status": "completed",
                                                                            "outputs": {"a": 1}}},
        {"name": "wrong", "blueprint": {"id": "w", "nodes": [{"id": "a", "uses": "c"}], "edges": []},
         "implementations": {"c": {"kind": "const", "output": 1}}, "expect": {"status": "completed",
                                                                            "outputs": {"a": 2}}},
    ]
    result = invoke("conformance", str(write(tmp_path, "s.json", scenarios)))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[0] == "PASS right"
    assert lines[1].startswith("FAIL wrong: ")
    assert "output of 'a' is 1, expected 2" in lines[1]
    assert lines[-1] == "1 passed, 1 failed"


def test_conformance_k_filters_by_name() -> None:
    result = invoke("conformance", "-k", "chain-three", str(SCENARIOS))
    assert result.exit_code == 0
    assert result.output.strip().splitlines() == ["PASS chain-three", "1 passed, 0 failed"]


@pytest.mark.parametrize(("content", "words"), [
    ("[{not json", "cannot read scenarios"),
    ('{"name": "x"}', "must be a JSON array"),
    ('["just a string"]', "scenario [0] must be an object"),
])
def test_conformance_malformed_scenarios_file_is_a_clear_error(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "s.json"
    path.write_text(content, encoding="utf-8")
    result = invoke("conformance", str(path))
    assert result.exit_code == 1
    assert words in result.output
    assert "passed" not in result.output


def test_conformance_scenario_with_malformed_blueprint_fails_by_name(tmp_path: Path) -> None:
    scenarios = [{"name": "broken", "blueprint": {"id": "b", "nodes": "nope", "edges": []},
                  "expect": {"status": "completed"}}]
    result = invoke("conformance", str(write(tmp_path, "s.json", scenarios)))
    assert result.exit_code == 1
    assert result.output.startswith("FAIL broken: ")
    assert "$.nodes" in result.output


def test_conformance_bad_behaviour_spec_fails_by_name(tmp_path: Path) -> None:
    scenarios = [{"name": "badspec", "blueprint": {"id": "b", "nodes": [{"id": "a", "uses": "x"}], "edges": []},
                  "implementations": {"x": {"kind": "add"}}, "expect": {"status": "completed"}}]
    result = invoke("conformance", str(write(tmp_path, "s.json", scenarios)))
    assert result.exit_code == 1
    assert result.output.startswith("FAIL badspec: bad behaviour spec: ")
    assert "implementations.x.amount" in result.output
