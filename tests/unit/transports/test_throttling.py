"""Throttling as back-pressure: short capped back-off, Retry-After honoured, one log line per episode."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from transports.azurequeue.auth import retry_policy
from transports.azurequeue.throttling import (
    BackPressureRetry,
    ThrottleCounts,
    ThrottleWatch,
    cosmos_throttle_kind,
    storage_throttle_kind,
)


def _settings(count: int, headers: dict[str, str] | None = None) -> dict[str, object]:
    history = [SimpleNamespace(http_response=SimpleNamespace(headers=headers or {}))]
    return {"count": count, "history": history}


def test_back_off_starts_short_doubles_and_is_capped() -> None:
    policy = BackPressureRetry(first=0.25, cap=4.0, total=10)
    waits = [max(policy.get_backoff_time(_settings(n)) for _ in range(50)) for n in range(1, 9)]
    assert waits[0] <= 0.25 and waits[1] <= 0.5 and waits[2] <= 1.0
    assert all(w <= 4.0 for w in waits)
    assert min(policy.get_backoff_time(_settings(1)) for _ in range(50)) >= 0.125  # jitter: the upper half


def test_a_retry_after_from_the_service_is_honoured() -> None:
    policy = BackPressureRetry(first=0.25, cap=4.0)
    assert policy.get_backoff_time(_settings(1, {"Retry-After": "3"})) == 3.0
    assert policy.get_backoff_time(_settings(1, {"x-ms-retry-after-ms": "1500"})) == 1.5


def test_the_transport_options_configure_the_policy() -> None:
    policy = retry_policy({"retry_first_backoff": "0.5", "retry_max_backoff": "2", "retry_total": "4"})
    assert (policy.first, policy.cap, policy.total_retries) == (0.5, 2.0, 4)
    assert retry_policy({}).describe() == "back-off 0.25 s doubling to 4 s, up to 10 retries"


@pytest.mark.parametrize(("status", "headers", "kind"), [
    (503, {"x-ms-error-code": "ServerBusy"}, "503 ServerBusy"),
    (500, {"x-ms-error-code": "OperationTimedOut"}, "500 OperationTimedOut"),
    (500, {"x-ms-error-code": "SomethingElse"}, None),
    (404, {"x-ms-error-code": "QueueNotFound"}, None),
])
def test_storage_throttling_answers_are_recognised(status: int, headers: dict[str, str], kind: str | None) -> None:
    assert storage_throttle_kind(status, headers) == kind


def test_cosmos_throttling_answers_are_recognised() -> None:
    assert cosmos_throttle_kind(429, {"x-ms-substatus": "3200"}) == "429/3200"
    assert cosmos_throttle_kind(408, {}) == "408"
    assert cosmos_throttle_kind(412, {}) is None


def test_an_episode_is_logged_once_when_it_starts_and_once_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    counts = ThrottleCounts()
    log = logging.getLogger("test.throttling")
    watch = ThrottleWatch("Cosmos DB", "retry-after", quiet_seconds=0.0, counts=counts, log=log)
    watch.quiet_seconds = 3600.0
    with caplog.at_level(logging.INFO, logger="test.throttling"):
        for _ in range(100):
            watch.throttled("429/3200")
            watch.answered()
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        assert "Cosmos DB is throttling (429/3200)" in caplog.records[0].getMessage()
        watch.quiet_seconds = 0.0
        watch.answered()
        watch.answered()
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
    assert "100 throttled answers" in caplog.records[1].getMessage()
    assert counts.snapshot() == {"Cosmos DB|429/3200": 100}
    assert counts.drain() == {"Cosmos DB|429/3200": 100} and counts.drain() == {}
