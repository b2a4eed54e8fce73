"""What a store can hold, checked the same way by every store (so both runners refuse the same values).

A value must be JSON (no NaN or infinities, no sets or objects) and fit in one Cosmos DB item
(2 MiB, less room for the system properties). Breaking either is a `PermanentError` naming
the key: no retry can store it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flowcraft_celery.stores.base import ValueTooLargeError
from flowcraft_celery.stores.faults import ValueNotJsonError

#: Cosmos DB's item size limit, less room for the system properties it adds.
MAX_ITEM_BYTES = 2 * 1024 * 1024 - 1024


def json_size(value: Any, key: str = "value") -> int:
    """Bytes of `value` as compact UTF-8 JSON (how the client sends items); ValueNotJsonError
    naming `key` when it is not JSON."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueNotJsonError(key, str(exc)) from None
    return len(text.encode())


def check_item_size(key: str, item: Mapping[str, Any], value: Any) -> None:
    """Raise ValueTooLargeError naming `key` when `item` would exceed the item size limit
    (ValueNotJsonError when `value` is not JSON)."""
    item_size = json_size(item, key)
    if item_size > MAX_ITEM_BYTES:
        value_size = json_size(value, key)
        raise ValueTooLargeError(key, value_size, MAX_ITEM_BYTES - (item_size - value_size))


#: Room an item needs besides its value (ids, run id, kind, timestamps).
_ITEM_OVERHEAD = 512


def check_value(key: str, value: Any) -> None:
    """Refuse a context value or output the Cosmos store could not hold, naming `key`."""
    size = json_size(value, key)
    limit = MAX_ITEM_BYTES - _ITEM_OVERHEAD - len(key.encode())
    if size > limit:
        raise ValueTooLargeError(key, size, limit)
