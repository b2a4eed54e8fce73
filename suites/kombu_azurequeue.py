"""Kombu's transport integration suite, plugged into `azurequeue://` the way kombu's own
t/integration/test_sqs.py plugs in SQS.

Not a test module of this project: `suites/run.py` copies this file into a temporary unpacked
kombu sdist as `t/integration/test_azurequeue.py`, next to kombu's `common.py`, and runs it there.
Environment: AZURE_STORAGE_CONNECTION_STRING (the account), AZUREQUEUE_SUITE_REDIS_URL (optional:
run with the `redis_url` transport option), PYTHONPATH naming the flowcraft-celery checkout.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import kombu
import pytest

import transports  # noqa: F401  (registers azurequeue:// with Kombu)

from .common import BaseExchangeTypes, BaseMessage, BaseTimeToLive, BasicFunctionality  # type: ignore[import-not-found]

#: Azurite's published development key; the unreachable account below uses it with a closed port.
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
UNREACHABLE = f"azurequeue://{DEV_KEY}@http://127.0.0.1:9/devstoreaccount1"


def _options(prefix: str) -> dict[str, Any]:
    options: dict[str, Any] = {"queue_name_prefix": prefix, "max_polling_interval": 1.0}
    redis_url = os.environ.get("AZUREQUEUE_SUITE_REDIS_URL")
    if redis_url:
        options["redis_url"] = redis_url
    return options


@pytest.fixture
def queue_prefix() -> Iterator[str]:
    """A prefix unique to the test, so runs never see each other's queues; they go with the test."""
    prefix = f"ks{uuid.uuid4().hex[:8]}-"
    yield prefix
    from azure.storage.queue import QueueServiceClient

    service = QueueServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
    for queue in service.list_queues(name_starts_with=prefix):
        service.delete_queue(queue.name)


@pytest.fixture
def connection(queue_prefix: str) -> kombu.Connection:
    return kombu.Connection("azurequeue://", transport_options=_options(queue_prefix))


@pytest.fixture
def invalid_connection(queue_prefix: str) -> kombu.Connection:
    return kombu.Connection(UNREACHABLE, transport_options=_options(queue_prefix))


# Class names follow kombu's (setup.cfg collects `test_*` classes).
class test_AzureQueueBasicFunctionality(BasicFunctionality):
    pass


class test_AzureQueueBaseExchangeTypes(BaseExchangeTypes):
    pass


class test_AzureQueueBaseTimeToLive(BaseTimeToLive):
    pass


class test_AzureQueueBaseMessage(BaseMessage):
    pass
