"""Ids of blueprints, nodes and runs: what every store accepts, and how to print one safely.

An id goes into Cosmos item ids and partition keys, Redis keys, queue messages and logs, so
it must be what all of them accept: 1-255 characters, none of Cosmos's forbidden `/ \\ ? #`,
no control or line-separator characters (which also keeps logs and terminals honest).
"""

from __future__ import annotations

import unicodedata

from flowcraft_celery.errors import FlowcraftError

#: Longest id Cosmos DB accepts.
MAX_ID_LENGTH = 255
#: Characters Cosmos DB refuses in an item id.
COSMOS_FORBIDDEN = frozenset("/\\?#")


class InvalidIdError(FlowcraftError, ValueError):
    """An id breaks a store's rules; the message names the kind of id and the rule."""

    code = "INVALID_ID"


def _unsafe(char: str) -> bool:
    """A control, format, surrogate, private or unassigned character, or a line/paragraph separator."""
    return unicodedata.category(char)[0] == "C" or char in "\u2028\u2029\u0085"


def id_problem(value: object) -> str | None:
    """Why `value` is not a valid id, or None."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > MAX_ID_LENGTH:
        return f"is {len(value)} characters long, over the limit of {MAX_ID_LENGTH}"
    bad = sorted({c for c in value if c in COSMOS_FORBIDDEN or _unsafe(c)})
    if bad:
        return "contains " + ", ".join(repr(c) for c in bad) + " (not allowed: / \\ ? # and control characters)"
    return None


def check_id(kind: str, value: object) -> str:
    """Return `value` if it is a valid id, else raise InvalidIdError naming the kind and the rule."""
    problem = id_problem(value)
    if problem is not None:
        raise InvalidIdError(f"{InvalidIdError.code}: {kind} id '{printable(str(value), 80)}' {problem}")
    assert isinstance(value, str)
    return value


def printable(text: str, limit: int = 300) -> str:
    """`text` safe for a terminal or a log line: control characters escaped, long text cut."""
    out = "".join(char.encode("unicode_escape").decode("ascii") if _unsafe(char) else char for char in text)
    return out if len(out) <= limit else f"{out[:limit]}...({len(text)} chars)"
