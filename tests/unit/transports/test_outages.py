"""The outage log: one WARNING when a service stops answering, one INFO when it answers again, per
service and process; only failures where the service did not answer count."""

from __future__ import annotations

import logging
import os

import pytest
import redis
from azure.core.exceptions import HttpResponseError, ServiceRequestError

from transports.azurequeue.outages import OUTAGES, Outages, shown, unanswered

REDIS = "redis://:secret@10.0.0.4:6380/0"


def _levels(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.levelname for r in caplog.records if r.name == "flowcraft.outages"]


def test_an_outage_is_one_warning_then_one_info_however_many_calls_fail(caplog: pytest.LogCaptureFixture) -> None:
    outages = Outages()
    with caplog.at_level(logging.DEBUG, logger="flowcraft.outages"):
        outages.answered("Redis", REDIS)
        for _ in range(50):
            outages.failed("Redis", REDIS, redis.TimeoutError("Timeout reading from 10.0.0.4:6380"))
        assert outages.down("Redis", "rediss://10.0.0.4:6380/1")  # the same server, whatever the URL says
        for _ in range(50):
            outages.answered("Redis", REDIS)
        outages.failed("Redis", REDIS, redis.ConnectionError("refused"))
    assert _levels(caplog) == ["WARNING", "INFO", "WARNING"]
    warning = caplog.records[0].getMessage()
    assert warning.startswith("Redis at redis://10.0.0.4:6380/0 does not answer (TimeoutError: Timeout reading")
    assert "secret" not in caplog.text and "Traceback" not in caplog.text
    assert caplog.records[0].exc_info is None


def test_each_service_has_its_own_outage(caplog: pytest.LogCaptureFixture) -> None:
    outages = Outages()
    with caplog.at_level(logging.INFO, logger="flowcraft.outages"):
        outages.failed("Redis", REDIS, redis.TimeoutError())
        outages.failed("Cosmos DB", "https://acct.documents.azure.com:443/", ServiceRequestError("reset"))
        outages.answered("Cosmos DB", "https://acct.documents.azure.com:443/")
    assert _levels(caplog) == ["WARNING", "WARNING", "INFO"]
    assert outages.down("Redis", REDIS) and not outages.down("Cosmos DB", "https://acct.documents.azure.com:443/")


def test_a_forked_child_starts_its_own_account() -> None:
    OUTAGES.failed("Redis", REDIS, redis.TimeoutError())
    try:
        pid = os.fork()
        if pid == 0:  # a pool process: it has not seen this outage itself
            os._exit(1 if OUTAGES.active else 0)
        _, status = os.waitpid(pid, 0)
        assert OUTAGES.down("Redis", REDIS)
    finally:
        OUTAGES.forget()
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize(("error", "outage"), [
    (redis.TimeoutError("timed out"), True),
    (redis.ConnectionError("Connection refused"), True),
    (ServiceRequestError("Connection reset by peer"), True),
    (ConnectionRefusedError(), True),
    (HttpResponseError(message="bad gateway", response=None), False),
    (redis.ResponseError("WRONGTYPE"), False),
    (ValueError("not JSON"), False),
    (ConnectionError("the storage account refuses the credential"), False),
])
def test_only_a_service_that_did_not_answer_is_an_outage(error: Exception, outage: bool) -> None:
    assert unanswered(error) is outage
    try:
        raise RuntimeError("Redis at ... unavailable") from error
    except RuntimeError as wrapped:
        assert unanswered(wrapped) is outage  # what it was raised from counts


def test_endpoints_are_shown_without_secrets() -> None:
    assert shown(REDIS) == "redis://10.0.0.4:6380/0"
    assert shown("https://acct.queue.core.windows.net/q?sv=2024&sig=abc") == "https://acct.queue.core.windows.net/q"
