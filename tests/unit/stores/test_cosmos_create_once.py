"""Creates of items written once survive a connection reset before the answer."""

from __future__ import annotations

from typing import Any

import pytest
from azure.core.exceptions import ServiceResponseError
from azure.cosmos.exceptions import CosmosResourceExistsError

from flowcraft_celery.stores import cosmos_client
from flowcraft_celery.stores.cosmos_client import create_once


class ResettingContainer:
    """A container whose first `resets` creates are applied but their answers lost (a reset)."""

    def __init__(self, resets: int) -> None:
        self.resets = resets
        self.items: dict[str, dict[str, Any]] = {}

    def create_item(self, item: dict[str, Any]) -> None:
        if item["id"] in self.items:
            raise CosmosResourceExistsError(message="exists")
        self.items[item["id"]] = item
        if self.resets:
            self.resets -= 1
            raise ServiceResponseError("('Connection aborted.', RemoteDisconnected('Remote end closed connection'))")


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cosmos_client, "CONNECTION_BACKOFF", 0.0)


def test_a_create_whose_answer_was_lost_is_sent_again_and_the_item_is_there_once() -> None:
    container = ResettingContainer(resets=1)
    create_once(container, {"id": "run:r1", "status": "running"})  # type: ignore[arg-type]
    assert container.items == {"run:r1": {"id": "run:r1", "status": "running"}}


def test_an_item_that_exists_is_told_and_left_alone() -> None:
    container = ResettingContainer(resets=0)
    assert create_once(container, {"id": "a", "v": 1}) is True  # type: ignore[arg-type]
    assert create_once(container, {"id": "a", "v": 2}) is False  # type: ignore[arg-type]
    assert container.items["a"]["v"] == 1


def test_a_service_that_keeps_resetting_is_an_error_not_a_silent_loss() -> None:
    container = ResettingContainer(resets=0)

    def reset(item: dict[str, Any]) -> None:
        raise ServiceResponseError("reset")

    container.create_item = reset  # type: ignore[method-assign]
    with pytest.raises(ServiceResponseError):
        create_once(container, {"id": "a"})  # type: ignore[arg-type]
