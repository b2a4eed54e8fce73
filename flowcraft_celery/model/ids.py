"""Ids of blueprints, nodes and runs: what every store accepts, and how to print one safely.

An id goes into Cosmos item ids and partition keys, Redis keys, queue messages and logs, so
it must be what all of them accept: 1-255 characters, none of Cosmos's forbidden `/ \\ ? #`,
no control or line-separator characters (which also keeps logs and terminals honest).
"""

from __future__ import annotations

from flowcraft_celery.errors import FlowcraftError
from flowcraft_celery.model.printable import printable, unsafe

#: Longest id Cosmos DB accepts.
MAX_ID_LENGTH = 255
#: Characters Cosmos DB refuses in an item id.
COSMOS_FORBIDDEN = frozenset("/\\?#")


class InvalidIdError(FlowcraftError, ValueError):
    """An id breaks a store's rules; the message names the kind of id and the rule."""

    code = "INVALID_ID"


def id_problem(value: object) -> str | None:
    """Why `value` is not a valid id, or None."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > MAX_ID_LENGTH:
        return f"is {len(value)} characters long, over the limit of {MAX_ID_LENGTH}"
    bad = sorted({c for c in value if c in COSMOS_FORBIDDEN or unsafe(c)})
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


def printable_id(value: object) -> str:
    """An id as logs and terminals show it: a valid id unchanged, anything else escaped and cut
    (see `printable`)."""
    return value if isinstance(value, str) and id_problem(value) is None else printable(value)
