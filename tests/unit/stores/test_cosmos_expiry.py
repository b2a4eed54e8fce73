"""What counts as expired for a Cosmos item: its per-item `ttl` has passed since its last write (`_ts`)."""

from __future__ import annotations

from flowcraft_celery.stores.cosmos import expired, ttl_operations


def test_an_item_is_expired_only_once_its_own_ttl_has_passed() -> None:
    written = 1_000_000.0
    assert not expired({"_ts": written, "ttl": 60}, now=written + 59)
    assert expired({"_ts": written, "ttl": 60}, now=written + 61)


def test_items_without_a_positive_ttl_never_expire() -> None:
    for item in ({"_ts": 0}, {"_ts": 0, "ttl": -1}, {"_ts": 0, "ttl": None}, {"_ts": 0, "ttl": True}):
        assert not expired(item, now=1e12)


def test_ttl_operations_patch_each_item_ttl_and_nothing_else() -> None:
    assert ttl_operations(["c:a", "o:n:0"], 604800) == [
        ("patch", ("c:a", [{"op": "set", "path": "/ttl", "value": 604800}])),
        ("patch", ("o:n:0", [{"op": "set", "path": "/ttl", "value": 604800}])),
    ]
