"""Map any Kombu queue name to a valid Azure queue name, deterministically and collision-free."""

from __future__ import annotations

import hashlib
import re

MIN_LENGTH = 3
MAX_LENGTH = 63
HASH_LENGTH = 10
DEAD_LETTER_SUFFIX = "-dlq"

_VALID = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9]))*$")
_VALID_PREFIX = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9]))*-?$")
#: Longest prefix: it stays whole even in a name that is hashed to fit (`azure_queue_name`).
MAX_PREFIX_LENGTH = MAX_LENGTH - HASH_LENGTH - 1
#: Azure's rule for queue names, as errors quote it.
QUEUE_NAME_RULE = ("Azure queue names are 3-63 characters: lowercase letters, digits and single hyphens, "
                   "starting and ending with a letter or digit")
_INVALID_RUN = re.compile(r"[^a-z0-9]+")


def is_valid_queue_name(name: str) -> bool:
    """Tell whether Azure accepts `name` as a queue name (3-63 chars, a-z 0-9, single dashes)."""
    return MIN_LENGTH <= len(name) <= MAX_LENGTH and bool(_VALID.match(name))


def prefix_problem(prefix: str) -> str | None:
    """Why `prefix` cannot begin Azure queue names as it is (None when it can; empty is fine): it
    must follow Azure's rule, and may end with one hyphen, as the queue name follows it."""
    if not prefix:
        return None
    if len(prefix) > MAX_PREFIX_LENGTH:
        return f"is {len(prefix)} characters long, over {MAX_PREFIX_LENGTH}"
    if not _VALID_PREFIX.match(prefix):
        return "is not a valid start of an Azure queue name"
    return None


def queue_problem(name: str, prefix: str = "") -> str | None:
    """Why Kombu queue `name` under `prefix` would not keep its name on Azure (None when it would)."""
    if not _VALID.match(name):
        return "is not a valid Azure queue name"
    if len(prefix + name) < MIN_LENGTH:
        return f"gives the queue name {prefix + name!r}, shorter than {MIN_LENGTH} characters"
    return None


def _digest(name: str) -> str:
    """Return a short stable hash of `name` that tells lossy-mapped names apart."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:HASH_LENGTH]


def azure_queue_name(name: str, prefix: str = "") -> str:
    """Return the Azure queue name for Kombu queue `name` under `prefix`.

    A full name that Azure already accepts is kept as is; any other is lowercased, its invalid
    characters folded into single dashes, and a hash of the original appended (truncating the
    readable part so the result fits 63 characters), so distinct names never share a queue.
    """
    full = f"{prefix}{name}"
    if is_valid_queue_name(full):
        return full
    readable = _INVALID_RUN.sub("-", full.lower()).strip("-")
    suffix = _digest(full)
    room = MAX_LENGTH - len(suffix) - 1
    readable = readable[:room].rstrip("-")
    return f"{readable}-{suffix}" if readable else f"q-{suffix}"


def listing_prefix(prefix: str) -> str:
    """Return the Azure name prefix shared by every queue created under Kombu `prefix`."""
    return _INVALID_RUN.sub("-", prefix.lower()).lstrip("-")


def dead_letter_queue_name(queue: str) -> str:
    """Return the Kombu name of the dead-letter queue that belongs to `queue`."""
    return f"{queue}{DEAD_LETTER_SUFFIX}"
