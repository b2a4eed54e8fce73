"""Values a run may carry: JSON that every store and runner keeps exactly.

Cosmos DB (like JavaScript) holds numbers as doubles and JSON has no NaN or Infinity, so a
value that would change on its way through a store is refused where it enters a run (the
initial context, a resume, a node's output or context write) instead of turning into `null`
or a rounded number later, on one runner and not the other.
"""

from __future__ import annotations

import math
from typing import Any

from flowcraft_celery.errors import FlowcraftError

#: Largest integer magnitude a double holds exactly (JavaScript's Number.MAX_SAFE_INTEGER + 1).
MAX_EXACT_INTEGER = 2 ** 53


class NotJsonError(FlowcraftError, ValueError):
    """A value cannot travel as JSON exactly; the message names where it sits and why."""

    code = "INVALID_JSON_VALUE"


def check_json(value: Any, where: str) -> None:
    """Raise NotJsonError naming `where` (and the path inside it) if `value` is not exact JSON."""
    problem = _problem(value, "")
    if problem is not None:
        path, why = problem
        raise NotJsonError(f"{NotJsonError.code}: {where}{path} {why}")


def _problem(value: Any, path: str) -> tuple[str, str] | None:
    """The first (path, reason) at which `value` is not exact JSON, or None."""
    if value is None or isinstance(value, (bool, str)):
        return None
    if isinstance(value, int):
        if abs(value) > MAX_EXACT_INTEGER:
            digits = str(value)
            shown = digits if len(digits) <= 30 else f"{digits[:12]}...({len(digits)} digits)"
            return path, (f"is the integer {shown}, beyond +/-2^53 ({MAX_EXACT_INTEGER}): JSON number stores "
                          "would lose its precision; pass it as a string")
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return path, "is NaN, which JSON cannot carry"
        if math.isinf(value):
            return path, "is Infinity, which JSON cannot carry (a number too large?)"
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _problem(item, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return path, f"has the key {key!r}, not a string"
            found = _problem(item, f"{path}[{key!r}]")
            if found is not None:
                return found
        return None
    return path, f"is not JSON (a Python {type(value).__name__})"
