"""Blueprint JSON read strictly: a duplicate key or a non-finite number is an error naming its path.

Python's `json` module keeps the last of two equal keys (so a second `uses` silently replaces the
first) and reads `NaN`, `Infinity` and `-Infinity`, which JSON does not have and no store keeps.
`loads_strict` refuses both, and `non_finite_path` finds a non-finite number in a value built in
Python (a `Flow`, a dict), each naming the JSON path (`$.nodes[0].params.limit`) of what is wrong.
"""

from __future__ import annotations

import json
import math
from typing import Any

from flowcraft_celery.errors import FlowcraftError


class StrictJsonError(FlowcraftError, ValueError):
    """The text is not strict JSON; `path` is the JSON path at fault, `detail` says why."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.detail = detail


class _Duplicated(dict[str, Any]):
    """An object that had a key twice (the first repeated key is kept to be reported)."""

    repeated: str = ""


class _NonFinite:
    """Where `NaN`, `Infinity` or `-Infinity` stood in the text."""

    def __init__(self, text: str) -> None:
        self.text = text


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    repeated = None
    for key, value in pairs:
        if key in seen and repeated is None:
            repeated = key
        seen[key] = value
    if repeated is None:
        return seen
    marked = _Duplicated(seen)
    marked.repeated = repeated
    return marked


def member_path(path: str, key: str) -> str:
    """`path.key`, or `path["key"]` when the key is not a plain name."""
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{json.dumps(key)}]"


def loads_strict(text: str) -> Any:
    """Parse JSON text, refusing duplicate keys and non-finite numbers (StrictJsonError naming the
    first one's path); json.JSONDecodeError when it is not JSON at all."""
    value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_NonFinite)
    problem = _first_problem(value, "$")
    if problem is not None:
        raise StrictJsonError(*problem)
    return value


def non_finite_path(value: Any, path: str = "$") -> str | None:
    """The JSON path of the first NaN or infinite number in `value`, or None."""
    problem = _first_problem(value, path)
    return problem[0] if problem is not None else None


def _first_problem(value: Any, path: str) -> tuple[str, str] | None:
    """(path, reason) of the first duplicate key or non-finite number in `value`, depth first."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, _NonFinite):
            return where, f"{item.text} is not a JSON number (JSON has no NaN or Infinity)"
        if isinstance(item, float) and not math.isfinite(item):
            text = "NaN" if math.isnan(item) else "Infinity" if item > 0 else "-Infinity"
            return where, f"{text} is not a JSON number (JSON has no NaN or Infinity; a number too large?)"
        if isinstance(item, _Duplicated):
            return member_path(where, item.repeated), "the key appears more than once in its object"
        if isinstance(item, dict):
            stack.extend((v, member_path(where, str(k))) for k, v in reversed(list(item.items())))
        elif isinstance(item, (list, tuple)):
            stack.extend((v, f"{where}[{i}]") for i, v in reversed(list(enumerate(item))))
    return None
