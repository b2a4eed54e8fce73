"""A worker of the Flowcraft app on `azurequeue://` gets the transport's warm-shutdown step (the
transport itself never imports Celery, so the app adds it)."""

from __future__ import annotations

from types import SimpleNamespace

from celery import Celery
from celery.signals import celeryd_init

import flowcraft_celery.distributed.app  # noqa: F401  (connects to `celeryd_init`)
from transports.azurequeue.handback import HandBackUnstarted


def starting_worker(broker: str) -> Celery:
    """An app whose `celery worker` is starting (Celery sends `celeryd_init` with the worker)."""
    app = Celery("starting", broker=broker, set_as_current=False)
    celeryd_init.send(sender="worker@host", instance=SimpleNamespace(app=app), conf=app.conf, options={})
    return app


def test_a_worker_on_azurequeue_hands_unstarted_messages_back_on_a_warm_shutdown() -> None:
    assert HandBackUnstarted in starting_worker("azurequeue://").steps["worker"]


def test_a_worker_on_another_broker_is_left_as_it_is() -> None:
    assert HandBackUnstarted not in starting_worker("redis://127.0.0.1:1/0").steps["worker"]
