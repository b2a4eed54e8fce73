"""Durations written in blueprints: a `sleep` node's `duration`, checked by validation and used by both runners."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds of a duration written `<n>ms|s|m|h|d` (e.g. `90s`, `12h`, `7d`); ValueError otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like '30s', '5m', '2h' or '7d'")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def sleep_seconds(params: Mapping[str, Any], node_id: str) -> float:
    """A `sleep` node's `duration` in seconds: milliseconds as a number, or `<n>s|m|h|d`."""
    duration = params.get("duration")
    if isinstance(duration, (int, float)) and not isinstance(duration, bool):
        if duration < 0:
            raise ValueError(f"sleep node {node_id!r}: duration must not be negative, got {duration}")
        return float(duration) / 1000.0
    if isinstance(duration, str):
        match = _DURATION.match(duration)
        if match:
            return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise ValueError(
        f"sleep node {node_id!r}: duration must be milliseconds or a string like '30s', '5m', "
        f"'2h', '1d', got {duration!r}"
    )
