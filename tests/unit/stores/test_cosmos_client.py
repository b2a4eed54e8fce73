"""Connection strings, TLS flags, request naming and item ids of the Cosmos modules (no server)."""

from __future__ import annotations

import re

import pytest
from celery.exceptions import ImproperlyConfigured

from flowcraft_celery.backends.cosmos import _ttl, connection_string_from_url, mask_url
from flowcraft_celery.stores.base import PatchOp, ValueTooLargeError
from flowcraft_celery.stores.cosmos import (
    MAX_BATCH_OPS,
    MAX_ITEM_BYTES,
    _chunks,
    batch_operations,
    check_item_size,
    item_id,
)
from flowcraft_celery.stores.cosmos_client import (
    CosmosConfigError,
    operation_of,
    parse_connection_string,
    parse_verify_flag,
)

KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU9DDJf5/2oMqLl6JVXUEHnCYqC7gsXzlzUm7xzy2Pp1FHpWw=="


def test_connection_string_parts() -> None:
    account = parse_connection_string(f"AccountEndpoint=https://h:8081/;AccountKey={KEY};")
    assert account.endpoint == "https://h:8081/"
    assert account.key == KEY


@pytest.mark.parametrize(
    ("conn_str", "named"),
    [
        ("", "empty"),
        (f"AccountKey={KEY};", "AccountEndpoint"),
        ("AccountEndpoint=https://h/;AccountKey=;", "AccountKey"),
        (f"AccountEndpoint=ftp://h/;AccountKey={KEY}", "not an http"),
        ("AccountEndpoint=https://h/;AccountKey=not base64!", "base64"),
        (f"AccountEndpoint=https://h/;garbage;AccountKey={KEY}", "segment 2 is not 'Name=value'"),
    ],
)
def test_bad_connection_strings_name_the_bad_part(conn_str: str, named: str) -> None:
    with pytest.raises(CosmosConfigError, match=re.escape(named)):
        parse_connection_string(conn_str)


def test_a_malformed_segment_is_not_quoted_in_the_error_since_it_may_be_the_key() -> None:
    with pytest.raises(CosmosConfigError) as error:
        parse_connection_string(f"AccountEndpoint=https://h/;AccountKey:{KEY}")
    assert KEY not in str(error.value) and KEY[:8] not in str(error.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, True), ("", True), ("false", False), ("0", False), ("No", False), ("off", False),
     ("true", True), ("1", True), (False, False), (True, True)],
)
def test_verify_flag(value: object, expected: bool) -> None:
    assert parse_verify_flag(value) is expected


def test_verify_flag_rejects_other_words() -> None:
    with pytest.raises(CosmosConfigError, match="maybe"):
        parse_verify_flag("maybe")


@pytest.mark.parametrize(
    ("method", "path", "headers", "expected"),
    [
        ("GET", "/", {}, "account:read"),
        ("GET", "/dbs/d/colls/c/docs/i", {}, "docs:read"),
        ("POST", "/dbs/d/colls/c/docs", {}, "docs:create"),
        ("POST", "/dbs/d/colls/c/docs", {"x-ms-documentdb-is-upsert": "True"}, "docs:upsert"),
        ("POST", "/dbs/d/colls/c/docs", {"x-ms-documentdb-isquery": "True"}, "docs:query"),
        ("POST", "/dbs/d/colls/c/docs", {"x-ms-cosmos-is-batch-request": "True"}, "docs:batch"),
        ("PATCH", "/dbs/d/colls/c/docs/i", {}, "docs:patch"),
        ("PUT", "/dbs/d/colls/c/docs/i", {}, "docs:replace"),
        ("DELETE", "/dbs/d/colls/c/docs/i", {}, "docs:delete"),
        ("GET", "/dbs/d/colls/c", {}, "colls:read"),
        ("GET", "/dbs/d/colls/c/pkranges", {}, "pkranges:readfeed"),
        ("POST", "/dbs", {}, "dbs:create"),
    ],
)
def test_operation_names(method: str, path: str, headers: dict[str, str], expected: str) -> None:
    assert operation_of(method, path, headers) == expected


def test_item_ids_are_valid_and_distinct() -> None:
    keys = ["a/b", "a\\b", "a?b", "a#b", "a%2Fb", "_outputs.x", "x" * 500, "x" * 501]
    ids = [item_id("c", key) for key in keys]
    assert len(set(ids)) == len(keys)
    for id_ in ids:
        assert not set(id_) & set("/\\?#") and len(id_) <= 255


def test_patch_keeps_the_last_op_per_key() -> None:
    ops = [PatchOp("set", "a", 1), PatchOp("delete", "a"), PatchOp("set", "b", 2),
           PatchOp("set", "a", 3)]
    operations = batch_operations("r", ops)
    assert [(name, args[0]["key"], args[0]["value"]) for name, args in operations] == [
        ("upsert", "b", 2), ("upsert", "a", 3)]
    deletes = batch_operations("r", [PatchOp("set", "a", 1), PatchOp("delete", "a")])
    assert deletes == [("delete", (item_id("c", "a"),))]


def test_unknown_patch_op_is_refused() -> None:
    with pytest.raises(ValueError, match="merge"):
        batch_operations("r", [PatchOp("merge", "a", 1)])  # type: ignore[arg-type]


def test_batches_respect_count_and_size_limits() -> None:
    many = batch_operations("r", [PatchOp("set", f"k{i}", i) for i in range(250)])
    assert [len(c) for c in _chunks(many)] == [MAX_BATCH_OPS, MAX_BATCH_OPS, 50]
    big = "v" * (MAX_ITEM_BYTES // 3)
    large = batch_operations("r", [PatchOp("set", f"k{i}", big) for i in range(5)])
    assert [len(c) for c in _chunks(large)] == [2, 2, 1]


def test_item_size_error_names_key_and_value_size() -> None:
    value = "x" * MAX_ITEM_BYTES
    with pytest.raises(ValueTooLargeError) as info:
        check_item_size("the.key", {"id": "c:the.key", "value": value}, value)
    assert info.value.key == "the.key" and info.value.size == MAX_ITEM_BYTES + 2
    assert info.value.limit < MAX_ITEM_BYTES


def test_backend_urls() -> None:
    assert connection_string_from_url("cosmos://") is None
    assert connection_string_from_url("cosmos://:k%2Bey@host:1234") == (
        "AccountEndpoint=https://host:1234/;AccountKey=k+ey;")
    assert connection_string_from_url("cosmos://:key@host") == (
        "AccountEndpoint=https://host:443/;AccountKey=key;")


def test_backend_url_takes_the_key_as_azure_shows_it() -> None:
    key = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU9DDJf5/2oMqLl6JVXUEHnCYqC7gsXzlzUm7xzy2Pp1FHpWw=="
    url = f"cosmos://:{key}@acct.documents.azure.com:443"
    assert connection_string_from_url(url) == f"AccountEndpoint=https://acct.documents.azure.com:443/;AccountKey={key};"
    assert connection_string_from_url(f"cosmos://:{key}@localhost:8081/") == (
        f"AccountEndpoint=https://localhost:8081/;AccountKey={key};")
    assert mask_url(url) == "cosmos://:**@acct.documents.azure.com:443"
    for bad in ("cosmos://localhost:8081", f"cosmos://:{key}@", f"cosmos://:{key}@host:port"):
        with pytest.raises(ImproperlyConfigured, match="cosmos://") as info:
            connection_string_from_url(bad)
        assert key not in str(info.value)


def test_result_ttl_in_whole_seconds() -> None:
    assert _ttl(None) is None and _ttl(0) is None and _ttl(-5) is None
    assert _ttl(0.2) == 1 and _ttl(86400.0) == 86400 and _ttl(2.5) == 3
