"""Process one raw queue message without a running worker (for an Azure Functions queue trigger).

The Functions host receives the message from the Azure queue and hands over its text; this
decodes our transport's envelope (fetching an out-of-line body from Blob Storage), finds the
Celery task it names (each task of a bundle, in order) and runs it in this process. What the
task publishes (successors, retries with their countdown) goes through the broker as usual. A message that cannot be
decoded, or names an unknown task, raises `UnprocessableMessage`: the host then retries it and
moves it to its poison queue after `maxDequeueCount` attempts, so nothing is dropped.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from celery import Celery
from celery.exceptions import Retry

from flowcraft_celery.errors import FlowcraftError
from transports.azurequeue import LargeBodyStore, wire


class UnprocessableMessage(FlowcraftError, ValueError):
    """The message is not a task message this app can run; says why."""


def task_calls(text: str, blobs: LargeBodyStore | None = None) -> list[tuple[str, str, list[Any], dict[str, Any], int]]:
    """Decode queue message text into its task calls (name, id, args, kwargs, retries): one, or
    one per part of a bundle (several task messages the transport sent as one queue message)."""
    try:
        envelope = wire.decode(text)
        if "blob" in envelope:
            if blobs is None:
                raise UnprocessableMessage("message body is stored out of line but no blob store is configured")
            payloads = [wire.payload_from(blobs.get(str(envelope["blob"])))]
        elif "ms" in envelope:
            payloads = list(envelope["ms"])
        elif "m" in envelope:
            payloads = [envelope["m"]]
        else:
            raise UnprocessableMessage("message is a dead-lettered raw body, not a task")
    except wire.PoisonMessage as exc:
        raise UnprocessableMessage(str(exc)) from exc
    return [_task_call(payload) for payload in payloads]


def _task_call(payload: dict[str, Any]) -> tuple[str, str, list[Any], dict[str, Any], int]:
    """The task call of one Kombu message (Celery protocol 2, JSON body)."""
    headers = payload.get("headers") or {}
    name = headers.get("task")
    if not isinstance(name, str):
        raise UnprocessableMessage("message has no Celery task header (is it Celery protocol 2?)")
    body: Any = payload.get("body", "")
    if (payload.get("properties") or {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    try:
        args, kwargs, _ = json.loads(body)
    except (ValueError, TypeError) as exc:
        raise UnprocessableMessage(f"task {name}: body is not a JSON [args, kwargs, embed] triple: {exc}") from exc
    return name, str(headers.get("id") or ""), list(args), dict(kwargs), int(headers.get("retries") or 0)


def process_message(text: str, app: Celery | None = None, blobs: LargeBodyStore | None = None) -> list[str]:
    """Run the task(s) a queue message carries; return their names. Retries are re-published, not
    slept. A failing task of a bundle raises after the ones before it ran: the host's retry runs
    them again, and node tasks drop what already finished."""
    if app is None:
        from flowcraft_celery.distributed.app import app as default_app

        app = default_app
    calls = task_calls(text, blobs)
    for name, _, _, _, _ in calls:
        if name not in app.tasks:
            raise UnprocessableMessage(f"task {name!r} is not registered in this app (check FLOWCRAFT_NODE_MODULES)")
    for name, task_id, args, kwargs, retries in calls:
        task = app.tasks[name]
        task.push_request(id=task_id, retries=retries, is_eager=False, called_directly=False, args=args,
                          kwargs=kwargs, delivery_info={"routing_key": app.conf.task_default_queue})
        try:
            task.run(*args, **kwargs)
        except Retry:
            pass
        finally:
            task.pop_request()
    return [name for name, *_ in calls]
