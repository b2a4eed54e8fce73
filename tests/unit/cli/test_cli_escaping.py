"""What the CLI prints of ids is escaped, and values JSON cannot carry are refused at the door."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from flowcraft_celery.cli.main import main
from flowcraft_celery.distributed.runs.publishing import child_run_id


def test_validate_prints_hostile_ids_escaped(tmp_path: Path) -> None:
    node_id = "a\nERROR forged line\x1b[2J"
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps({"id": "bp\r\nX", "nodes": [{"id": node_id, "uses": "u"}], "edges": []}))
    result = CliRunner().invoke(main, ["validate", str(path)], catch_exceptions=False)
    assert result.exit_code == 1
    assert "\x1b" not in result.output and "\r" not in result.output
    assert not any(line.startswith("ERROR forged") for line in result.output.splitlines())
    assert "INVALID_ID" in result.output and "\\x1b[2J" in result.output


def test_run_refuses_nan_and_huge_integers_in_the_context(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"id": "one", "nodes": [{"id": "a", "uses": "loop-controller",
                                                        "params": {"condition": "false"}}], "edges": []}))
    for text, needle in (('{"x": NaN}', "NaN"), ('{"x": 1e400}', "Infinity"),
                         ('{"x": 18446744073709551617}', "2^53")):
        result = CliRunner().invoke(main, ["run", str(path), "--local", "--context", text])
        assert result.exit_code == 2, result.output
        assert needle in result.output and "Traceback" not in result.output


def test_child_run_ids_stay_within_the_id_limit() -> None:
    short = child_run_id("run", "node", 3)
    assert short == "run.node.3"
    long_id = child_run_id("r" * 200, "n" * 200, 12)
    assert len(long_id) <= 255 and long_id == child_run_id("r" * 200, "n" * 200, 12)
    assert long_id != child_run_id("r" * 200, "n" * 200, 13)
