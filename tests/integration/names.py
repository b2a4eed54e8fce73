"""Unique resource names for integration tests, valid as Azure queue and container names."""

from __future__ import annotations

import re
import uuid

_MAX_PREFIX = 54

#: Every name made in this process: the session's end removes the dev services' queues and
#: databases named with them (tests/integration/leftovers.py).
MADE: set[str] = set()


def unique_name(prefix: str) -> str:
    """`<prefix>-<8 hex>`: lowercase letters, digits and single dashes, 3-63 chars."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", prefix.lower()).strip("-")[:_MAX_PREFIX].strip("-")
    suffix = uuid.uuid4().hex[:8]
    name = f"{cleaned}-{suffix}" if cleaned else f"t-{suffix}"
    MADE.add(name)
    return name
