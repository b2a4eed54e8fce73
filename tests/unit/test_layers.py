"""The layers of docs/architecture.md hold: imports only go down (import-linter's contracts in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_imports_only_go_down_the_layers() -> None:
    result = lint_imports("--no-cache")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "3 kept, 0 broken" in result.stdout


def test_an_upward_import_is_reported(tmp_path: Path) -> None:
    inverted = tmp_path / "inverted.toml"
    inverted.write_text(
        '[tool.importlinter]\nroot_packages = ["flowcraft_celery"]\n\n'
        '[[tool.importlinter.contracts]]\nname = "engine below model (false)"\ntype = "layers"\n'
        'containers = ["flowcraft_celery"]\nlayers = ["model", "engine"]\n'
    )
    result = lint_imports("--no-cache", "--config", str(inverted))
    assert result.returncode != 0
    assert "flowcraft_celery.engine" in result.stdout and "BROKEN" in result.stdout
