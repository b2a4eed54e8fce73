"""Finding blueprints: JSON files, folders of them, and Python objects named `module:attr`.

Two ways to read the same sources:
- `load_blueprints(sources)` reads every blueprint at once (a worker does, and refuses to start
  when one cannot be read);
- `Catalog(sources)` is a mapping that reads only what a lookup needs: in a folder, blueprint
  `x` is the file `x.json`, so validating or running a flow reads the flow and the subflows it
  references, never the folder's other files.

Every fault is a `CatalogError` naming the file (or `module:attr`) and what is wrong with it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from flowcraft_celery.errors import FlowcraftError
from flowcraft_celery.model.blueprint import Blueprint, BlueprintFormatError
from flowcraft_celery.model.builder import Flow


class CatalogError(FlowcraftError, ValueError):
    """A blueprint source cannot be read; the message names the source and the fault."""


def read_blueprint_file(path: str | Path, blueprint_id: str | None = None) -> Blueprint:
    """One blueprint file; any fault (missing, not UTF-8, not JSON, too deep, wrong shape) names the file."""
    file = Path(path)
    try:
        return Blueprint.load(file, blueprint_id)
    except FileNotFoundError:
        raise CatalogError(f"{file}: no such file") from None
    except IsADirectoryError:
        raise CatalogError(f"{file}: is a folder, not a blueprint file") from None
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{file}: not UTF-8 text (byte {exc.start})") from None
    except RecursionError:
        raise CatalogError(f"{file}: JSON nested too deeply to be a blueprint") from None
    except BlueprintFormatError as exc:
        raise CatalogError(f"{file}: {exc}") from None
    except OSError as exc:
        raise CatalogError(f"{file}: cannot be read ({exc.strerror or exc})") from None


def is_object_reference(source: str) -> bool:
    """Whether `source` names a Python object (`package.module:attr`) rather than a path."""
    module, sep, attr = source.partition(":")
    return bool(sep and module and attr) and "/" not in source and "\\" not in source \
        and not source.endswith(".json") and all(part.isidentifier() for part in (*module.split("."), attr))


def load_object(source: str) -> list[Blueprint]:
    """The blueprints a `module:attr` names: a Blueprint, a Flow, a list or dict of them, or a
    function returning one of those."""
    module_name, _, attr = source.partition(":")
    try:
        value = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise CatalogError(f"{source}: cannot import module {module_name!r} ({exc})") from None
    except AttributeError:
        raise CatalogError(f"{source}: module {module_name!r} has no attribute {attr!r}") from None
    try:
        return _as_blueprints(value, source)
    except BlueprintFormatError as exc:
        raise CatalogError(f"{source}: {exc}") from None


def _as_blueprints(value: Any, source: str) -> list[Blueprint]:
    """Accept a Blueprint, a Flow, or a list/dict of them (or a function returning one)."""
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
    raise CatalogError(f"{source}: is a {type(value).__name__}, not a Blueprint, a Flow, or a list of them")


def _load_source(source: str) -> list[tuple[str, Blueprint]]:
    """(where it came from, blueprint) for every blueprint of one source."""
    path = Path(source)
    if path.is_dir():
        return [(str(p), read_blueprint_file(p)) for p in sorted(path.glob("*.json"))]
    if is_object_reference(source):
        return [(source, b) for b in load_object(source)]
    if path.suffix == ".json" or path.exists():
        return [(source, read_blueprint_file(path))]
    raise CatalogError(f"{source}: not a .json file, a folder, or module:attribute")


class _Found:
    """Blueprints by id with where each came from; two different blueprints with one id are a
    CatalogError naming both places (the same document found twice is fine)."""

    def __init__(self) -> None:
        self.blueprints: dict[str, Blueprint] = {}
        self.origins: dict[str, str] = {}

    def add(self, origin: str, blueprint: Blueprint) -> None:
        previous = self.blueprints.get(blueprint.id)
        if previous is not None and previous.to_dict() != blueprint.to_dict():
            raise CatalogError(f"blueprint id {blueprint.id!r} is defined twice, differently: in "
                               f"{self.origins[blueprint.id]} and in {origin}")
        self.blueprints[blueprint.id] = blueprint
        self.origins.setdefault(blueprint.id, origin)


#: How many unreadable blueprint files one error names (the rest are counted).
NAMED_FAULTS = 3


def load_blueprints(sources: Iterable[str]) -> dict[str, Blueprint]:
    """Every blueprint the sources define, by id, read now. Every file is read before one
    CatalogError names the unreadable ones (and an id defined twice differently)."""
    found = _Found()
    faults: list[str] = []
    for source in (s.strip() for s in sources if s.strip()):
        path = Path(source)
        for part in [str(p) for p in sorted(path.glob("*.json"))] if path.is_dir() else [source]:
            try:
                for origin, blueprint in _load_source(part):
                    found.add(origin, blueprint)
            except CatalogError as exc:
                faults.append(str(exc))
    if faults:
        more = f" (and {len(faults) - NAMED_FAULTS} more)" if len(faults) > NAMED_FAULTS else ""
        raise CatalogError("; ".join(faults[:NAMED_FAULTS]) + more)
    return found.blueprints


class Catalog(Mapping[str, Blueprint]):
    """Blueprints by id, read on demand from the sources (an id defined twice differently is an error).

    A lookup of `x` reads `x.json` in each folder, the files named explicitly, and the
    `module:attr` objects; iterating reads everything, like `load_blueprints`.
    """

    def __init__(self, sources: Iterable[str], blueprints: Iterable[Blueprint] = ()) -> None:
        self.sources = [s.strip() for s in sources if s.strip()]
        self._given = {b.id: b for b in blueprints}
        self._found: dict[str, Blueprint | None] = {}
        self._read: dict[str, list[tuple[str, Blueprint]]] = {}
        self._everything: dict[str, Blueprint] | None = None

    def _of_source(self, source: str) -> list[tuple[str, Blueprint]]:
        """The blueprints of a file or `module:attr` source, read once."""
        if source not in self._read:
            self._read[source] = _load_source(source)
        return self._read[source]

    def _lookup(self, blueprint_id: str) -> Blueprint | None:
        found = _Found()
        for source in self.sources:
            folder = Path(source)
            if not folder.is_dir():
                for origin, blueprint in self._of_source(source):
                    if blueprint.id == blueprint_id:
                        found.add(origin, blueprint)
                continue
            file = folder / f"{blueprint_id}.json"
            if file.is_file():
                blueprint = read_blueprint_file(file)
                if blueprint.id != blueprint_id:
                    raise CatalogError(f"{file}: declares id {blueprint.id!r}, but a file in a blueprint folder "
                                       f"is looked up by its name; rename it {blueprint.id}.json or fix its id")
                found.add(str(file), blueprint)
        return found.blueprints.get(blueprint_id, self._given.get(blueprint_id))

    def searched(self, blueprint_id: str) -> str:
        """Where `blueprint_id` was looked for, for a message about a blueprint not found."""
        places = [str(Path(s) / f"{blueprint_id}.json") if Path(s).is_dir() else s for s in self.sources]
        return "looked for " + ", ".join(places) if places else "no blueprint folder was given"

    def __getitem__(self, blueprint_id: str) -> Blueprint:
        if blueprint_id not in self._found:
            self._found[blueprint_id] = self._lookup(blueprint_id)
        found = self._found[blueprint_id]
        if found is None:
            raise KeyError(blueprint_id)
        return found

    def _all(self) -> dict[str, Blueprint]:
        if self._everything is None:
            self._everything = {**self._given, **load_blueprints(self.sources)}
        return self._everything

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def where(self, blueprint_id: str) -> str:
        """Where a lookup of `blueprint_id` looks, for messages ("flows/x.json, mymod:flows")."""
        places = [str(Path(s) / f"{blueprint_id}.json") if Path(s).is_dir() else s for s in self.sources]
        return ", ".join(places) or "no blueprint sources"

