"""Finding blueprints: JSON files, folders of them, and Python objects named `module:attr`."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.builder import Flow


class CatalogError(ValueError):
    """A blueprint source cannot be loaded; names the source."""


def load_blueprints(sources: Iterable[str]) -> dict[str, Blueprint]:
    """Every blueprint the sources define, by id; two different blueprints with one id are a
    CatalogError naming both sources (the same document found twice is fine)."""
    found: dict[str, Blueprint] = {}
    origins: dict[str, str] = {}
    for source in sources:
        for origin, blueprint in _load_source(source.strip()):
            previous = found.get(blueprint.id)
            if previous is not None and previous.to_dict() != blueprint.to_dict():
                raise CatalogError(f"blueprint id {blueprint.id!r} is defined twice, differently: in "
                                   f"{origins[blueprint.id]} and in {origin}")
            found[blueprint.id] = blueprint
            origins.setdefault(blueprint.id, origin)
    return found


def _load_source(source: str) -> list[tuple[str, Blueprint]]:
    """(where it came from, blueprint) for each blueprint a source defines."""
    if not source:
        return []
    path = Path(source)
    if path.is_dir():
        return [(str(p), Blueprint.load(p)) for p in sorted(path.glob("*.json"))]
    if path.suffix == ".json":
        if not path.exists():
            raise CatalogError(f"blueprint file {source!r} does not exist")
        return [(source, Blueprint.load(path))]
    if ":" in source:
        module_name, _, attr = source.partition(":")
        try:
            value = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise CatalogError(f"cannot load blueprints from {source!r}: {exc}") from exc
        return [(source, b) for b in _as_blueprints(value, source)]
    raise CatalogError(f"blueprint source {source!r} is not a .json file, a folder, or module:attribute")


def _as_blueprints(value: Any, source: str) -> list[Blueprint]:
    """Accept a Blueprint, a Flow, or a list/dict of them."""
    if callable(value) and not isinstance(value, (Blueprint, Flow)):
        value = value()
    if isinstance(value, Flow):
        return [value.build()]
    if isinstance(value, Blueprint):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [b for item in value for b in _as_blueprints(item, source)]
    raise CatalogError(f"{source!r} is {type(value).__name__}, not a Blueprint, a Flow, or a list of them")
