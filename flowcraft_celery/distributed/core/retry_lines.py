"""Celery's own retry lines stay out of the log while a service does not answer.

Beat (`beat: Connection error: … Trying again in …`, and `Message Error: …` with a traceback for a
schedule entry it could not send) and the worker's consumer (`consumer: Cannot connect to …`) log
an ERROR at every retry. When the error is a service not answering, the outage log has said so
once (`transports.azurequeue.outages`, and at start the preflight line), so these lines go to
DEBUG without their traceback; any other error (a refused credential) keeps its ERROR.
"""

from __future__ import annotations

import logging

from transports.azurequeue import unanswered

#: How Celery's retry lines begin, and the loggers that write them.
RETRY_LINES = ("beat: Connection error", "beat pidbox: Connection error", "consumer: Cannot connect to",
               "Message Error")
LOGGERS = ("celery.beat", "celery.worker.consumer.consumer")


class OutageRetries(logging.Filter):
    """Demote a Celery retry line whose error is an outage to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every other record as it is; a demoted one only when DEBUG is on."""
        if not (isinstance(record.msg, str) and record.msg.startswith(RETRY_LINES)):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        error = next((a for a in args if isinstance(a, BaseException)), None)
        if error is None or not unanswered(error):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info, record.exc_text = None, None
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def quiet_outage_retries() -> None:
    """Install the filter on Celery's loggers (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OutageRetries) for f in logger.filters):
            logger.addFilter(OutageRetries())
