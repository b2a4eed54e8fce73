"""The layers of docs/architecture.md hold: imports only go down (import-linter's contracts in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lint_imports(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_imports_only_go_down_the_layers() -> None:
    result = lint_imports("--no-cache")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "5 kept, 0 broken" in result.stdout


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


def test_an_upward_import_inside_a_function_is_reported(tmp_path: Path) -> None:
    """A function-level import cannot hide a circle: `lower` importing `upper` in a function body breaks."""
    package = tmp_path / "layered"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "upper.py").write_text("from layered import lower\n\n\ndef top() -> int:\n    return lower.bottom()\n")
    (package / "lower.py").write_text("def bottom() -> int:\n    from layered import upper\n\n    return id(upper)\n")
    config = tmp_path / "layers.toml"
    config.write_text(
        '[tool.importlinter]\nroot_packages = ["layered"]\n\n'
        '[[tool.importlinter.contracts]]\nname = "upper above lower"\ntype = "layers"\n'
        'containers = ["layered"]\nlayers = ["upper", "lower"]\n'
    )
    result = lint_imports("--no-cache", "--config", str(config), cwd=tmp_path)
    assert result.returncode != 0, result.stdout
    assert "layered.lower -> layered.upper" in result.stdout and "BROKEN" in result.stdout
