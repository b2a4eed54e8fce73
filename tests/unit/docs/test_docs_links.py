"""The README and docs/ stand on their own: every relative link resolves, and they never point
at documents users do not have."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_the_guide_is_linked_from_the_readme() -> None:
    assert "docs/README.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(PAGES) >= 12


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_reference_to_documents_outside_the_project(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"SPEC(\.md)?\s*§|DESIGN\.md|/work/", text), page
