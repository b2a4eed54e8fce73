"""A clone tests itself: nothing under tests/ reads a file outside the repository.

Every path a test names is either relative to the test file (inside the repository) or a
temporary one; an absolute path into a workspace, a `..` that climbs out of the clone, or a
`parents[n]` above the repository root would make a fresh clone fail its own tests.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEST_FILES = sorted(p for p in (ROOT / "tests").rglob("*") if p.suffix in (".py", ".json") and p.is_file())

#: Absolute paths outside the clone, and relative ones that climb out of it.
OUTSIDE = re.compile(r"""(["'])(/work/|/home/|/root/|/tmp/shared|(\.\./)+shared|\.\./\.\.)""")
PARENTS = re.compile(r"Path\(__file__\)(?:\.resolve\(\))?\.parents\[(\d+)\]")
SELF = Path(__file__).resolve()


def test_the_tests_are_found() -> None:
    assert len(TEST_FILES) > 50
    assert SELF in TEST_FILES


@pytest.mark.parametrize("path", [p for p in TEST_FILES if p != SELF], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_test_names_a_path_outside_the_repository(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    outside = [m.group(0) for m in OUTSIDE.finditer(text)]
    assert not outside, f"{path.relative_to(ROOT)} names paths outside the clone: {outside}"
    for match in PARENTS.finditer(text):
        target = path.resolve().parents[int(match.group(1))]
        assert target == ROOT or ROOT in target.parents, \
            f"{path.relative_to(ROOT)}: {match.group(0)} is {target}, outside the repository {ROOT}"


def test_the_guard_catches_a_path_outside() -> None:
    assert OUTSIDE.search('REFERENCE = Path("/work/shared/reference-blueprints")')
    assert OUTSIDE.search('open("../shared/conformance/scenarios.json")')
    assert not OUTSIDE.search('ROOT / "tests" / "scenarios" / "reference.json"')
