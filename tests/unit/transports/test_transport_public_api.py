"""The transport is a plain Kombu transport: importing it never imports Celery, and the workflow
library uses it only through its declared public API (`transports.azurequeue.__all__`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import transports.azurequeue

ROOT = Path(__file__).resolve().parents[3]
#: What flowcraft_celery may import of the transport: the alias, the public API, the Celery worker step.
ALLOWED_MODULES = {"transports", "transports.azurequeue", "transports.azurequeue.handback"}


def test_importing_the_transport_imports_no_celery() -> None:
    code = "import sys, transports.azurequeue; assert 'celery' not in sys.modules, 'celery was imported'"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_every_public_name_exists() -> None:
    missing = [name for name in transports.azurequeue.__all__ if not hasattr(transports.azurequeue, name)]
    assert missing == []


def transport_imports(source: str) -> list[tuple[str, str]]:
    """(module, name) of every import of the transport in `source`; name is "" for `import module`."""
    found: list[tuple[str, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "transports":
            found.extend((str(node.module), alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend((alias.name, "") for alias in node.names if alias.name.split(".")[0] == "transports")
    return found


def internal_imports(source: str) -> list[str]:
    """The imports of `source` that reach past the transport's public API."""
    public = set(transports.azurequeue.__all__)
    return [f"{module}:{name}" for module, name in transport_imports(source)
            if module not in ALLOWED_MODULES or (module == "transports.azurequeue" and name not in public)]


def test_flowcraft_celery_uses_only_the_transports_public_api() -> None:
    offending = {str(path.relative_to(ROOT)): found for path in sorted((ROOT / "flowcraft_celery").rglob("*.py"))
                 if (found := internal_imports(path.read_text()))}
    assert offending == {}


def test_an_import_of_an_internal_module_or_name_is_reported() -> None:
    source = ("from transports.azurequeue.queues import AzureQueues\n"
              "from transports.azurequeue import LeaseKeeper, bundled\n"
              "import transports.azurequeue.receiver\n")
    assert internal_imports(source) == ["transports.azurequeue.queues:AzureQueues",
                                        "transports.azurequeue:LeaseKeeper", "transports.azurequeue.receiver:"]
