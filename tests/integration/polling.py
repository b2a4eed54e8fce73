"""`wait_for`: poll a condition with a deadline, failing with what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(condition: Callable[[], Any], timeout: float, what: str = "a condition", interval: float = 0.25) -> Any:
    """Poll until `condition()` is truthy and return its value (AssertionError naming `what` otherwise)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
