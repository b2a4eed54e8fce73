"""docs/language/first-workflow.md as a newcomer follows it: its files are examples/language/first/,
and the commands it shows print what it says (through the real command line)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from flowcraft_celery import Flow
from flowcraft_celery.model.catalog import read_blueprint_file
from flowcraft_celery.model.validation import BUILTIN_USES

ROOT = Path(__file__).resolve().parents[3]
PAGE = (ROOT / "docs" / "language" / "first-workflow.md").read_text(encoding="utf-8")
FOLDER = ROOT / "examples" / "language" / "first"


def blocks(lang: str) -> list[str]:
    """The page's fenced blocks of language LANG ("" for plain ones, such as shell sessions)."""
    found: list[str] = []
    lines: list[str] = []
    fence: str | None = None
    for line in PAGE.splitlines(keepends=True):
        if not line.startswith("```"):
            lines.append(line)
        elif fence is None:
            fence, lines = line.strip()[3:], []
        else:
            if fence == lang:
                found.append("".join(lines))
            fence = None
    return found


def transcript(first: str) -> list[tuple[str, str]]:
    """The commands of the shell block that starts with `$ FIRST` and the output shown after each."""
    [block] = [b for b in blocks("") if b.startswith(f"$ {first}")]
    steps: list[tuple[str, str]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], ""))
        else:
            command, shown = steps[-1]
            steps[-1] = (command, shown + line + "\n")
    return steps


def cli(command: str) -> subprocess.CompletedProcess[str]:
    args = shlex.split(command)
    assert args[0] == "flowcraft-celery"
    return subprocess.run([sys.executable, "-m", "flowcraft_celery.cli", *args[1:]], cwd=FOLDER,
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_pages_files_are_the_examples() -> None:
    python, blueprint = blocks("python")[0], blocks("json")[0]
    assert python == (FOLDER / "greetings.py").read_text(encoding="utf-8")
    assert json.loads(blueprint) == json.loads((FOLDER / "flows" / "hello.json").read_text(encoding="utf-8"))


def test_validate_and_run_print_what_the_page_shows() -> None:
    steps = transcript("flowcraft-celery validate")
    assert len(steps) == 2
    for command, shown in steps:
        result = cli(command)
        assert result.returncode == 0, result.stderr
        if shown.lstrip().startswith("{"):
            expected = json.loads(shown.replace('"…"', '"RUN"'))
            printed = json.loads(result.stdout)
            assert {**printed, "runId": "RUN"} == expected
        else:
            assert result.stdout == shown


def test_the_python_flow_and_the_published_figures_match_the_file() -> None:
    blueprint = read_blueprint_file(FOLDER / "flows" / "hello.json")
    [flow] = re.findall(r"`(Flow\(\"hello\".*?)`", PAGE)
    built = eval(flow, {"Flow": Flow}).build()  # the page's own one-line example
    assert built.fingerprint == blueprint.fingerprint
    assert f"hello      1        {blueprint.fingerprint[:16]}  greet, shout" in PAGE
    assert f"published 1 blueprint(s) (hello) and {2 + len(BUILTIN_USES)} node implementation(s)" in PAGE
