"""Fixtures shared by the transport tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis


@pytest.fixture
def rdb(unique_prefix: str) -> Iterator[redis.Redis]:
    """Redis, with every key naming this test's prefix (the transport's and the tasks') deleted after."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
    yield client
    for key in client.scan_iter(f"*{unique_prefix}*"):
        client.delete(key)
