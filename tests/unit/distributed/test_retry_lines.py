"""Celery's own retry lines (beat's, the consumer's) go to DEBUG, without traceback, when their
error is a service not answering; any other error keeps its level."""

from __future__ import annotations

import logging

import redis
from azure.core.exceptions import ServiceRequestError

from flowcraft_celery.distributed.core.retry_lines import OutageRetries


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("celery.beat", logging.ERROR, __file__, 1, msg, args, None)


def test_celery_retry_lines_of_an_outage_are_debug_and_others_stay() -> None:
    quiet = OutageRetries()
    outage = _record("beat: Connection error: %s. Trying again in %s seconds...",
                     _caused_by(redis.TimeoutError("timed out")), 2)
    assert quiet.filter(outage) is False and outage.levelno == logging.DEBUG
    refused = _record("consumer: Cannot connect to %s: %s.\n%s", "azurequeue://", ConnectionError("refused key"), "")
    assert quiet.filter(refused) is True and refused.levelno == logging.ERROR
    other = _record("something else: %s", _caused_by(redis.TimeoutError()))
    assert quiet.filter(other) is True and other.levelno == logging.ERROR
    beat = logging.getLogger("celery.beat")
    level = beat.level
    beat.setLevel(logging.DEBUG)
    try:
        shown_at_debug = _record("Message Error: %s\n%s", _caused_by(ServiceRequestError("reset")), "stack")
        assert quiet.filter(shown_at_debug) is True and shown_at_debug.exc_info is None
    finally:
        beat.setLevel(level)


def _caused_by(error: Exception) -> Exception:
    try:
        raise ConnectionError("the storage account does not answer") from error
    except ConnectionError as exc:
        return exc

