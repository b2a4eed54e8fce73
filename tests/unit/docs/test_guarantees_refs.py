"""docs/guarantees.md names the test that proves each guarantee: every such name must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "guarantees.md"
#: `dir/file.py` or `dir/file.py::test_name`, as the page writes them (relative to tests/ or
#: tests/integration/, or to the repository).
FILE_REF = re.compile(r"`([\w/]+\.py)(?:::(\w+))?`")
#: a test named on its own: `test_...`
BARE_TEST = re.compile(r"`(test_\w+)`")


def _resolve(path: str) -> Path | None:
    for base in (ROOT / "tests", ROOT / "tests" / "integration", ROOT / "flowcraft_celery", ROOT):
        if (base / path).is_file():
            return base / path
    return None


def test_every_file_and_test_the_guarantees_name_exists() -> None:
    refs = FILE_REF.findall(PAGE.read_text(encoding="utf-8"))
    assert len(refs) >= 20
    for path, name in refs:
        found = _resolve(path)
        assert found is not None, f"docs/guarantees.md names {path}, which does not exist"
        if name:
            assert re.search(rf"^def {name}\(", found.read_text(encoding="utf-8"), re.M), \
                f"docs/guarantees.md names {path}::{name}, which is not a test in {found.relative_to(ROOT)}"


def test_every_test_named_on_its_own_exists() -> None:
    names = set(BARE_TEST.findall(PAGE.read_text(encoding="utf-8")))
    defined = {m for f in (ROOT / "tests").rglob("test_*.py")
               for m in re.findall(r"^def (test_\w+)\(", f.read_text(encoding="utf-8"), re.M)}
    assert names and not names - defined, f"docs/guarantees.md names missing tests: {sorted(names - defined)}"
