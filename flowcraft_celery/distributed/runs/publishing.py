"""Putting node messages on the broker: their task names, one, together, in bundles, within a timeout.

Messages are immutable (`core.message.NodeMessage`): each publish returns the messages as they
were sent, stamped with the time the send returned.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

from celery import Celery

from flowcraft_celery.distributed.core.message import NodeMessage
from flowcraft_celery.distributed.core.shards import node_queue
from flowcraft_celery.distributed.runs.senders import SENDERS, SendTimeout
from flowcraft_celery.model.graph import Graph
from flowcraft_celery.model.ids import MAX_ID_LENGTH
from flowcraft_celery.stores.faults import InfrastructureError
from transports.azurequeue import bundled

logger = logging.getLogger("flowcraft.runs")

#: The fields of a node message that Flower and `celery events` show as the task's kwargs (its
#: `kwargsrepr`): which node execution it is and of what kind (an object field shows as `...`).
#: The message travels whole in the kwargs; the summary spares the publish a `saferepr` of it.
SHOWN_FIELDS = ("run", "bp", "ver", "node", "it", "attempt", "wake", "resume", "child", "done")


def node_task_name(uses: str) -> str:
    """The Celery task name of a node implementation."""
    return f"flowcraft.node.{uses}"


def publish(app: Celery, graph: Graph, message: NodeMessage, countdown: float | None = None) -> NodeMessage:
    """Send one node message to its implementation's task (and its node's queue, if set); return it as sent."""
    return publish_together(app, graph, [message], countdown)[0]


def publish_together(app: Celery, graph: Graph, messages: Sequence[NodeMessage],
                     countdown: float | None = None) -> list[NodeMessage]:
    """Send node messages of one implementation and queue as a single task message; return them as sent.

    One message carries `msg`; several carry `msgs`, run one after the other by the task
    (a fan-out then costs one queue send, receive and delete per group instead of per node).
    Each goes out stamped with `sent` (and `due` when delayed) and comes back stamped with the
    time the send returned, so a ledger entry written from it records a time no earlier than
    the queue's insertion of the message, however slow the send (reconcile counts a message as
    still queued when the queue's oldest message is not younger than its `sent`).
    """
    node = graph.nodes[messages[0].node_id]
    queue = node_queue(app.conf, node.config.queue, messages[0].run_id)
    options: dict[str, Any] = {} if queue == app.conf.task_default_queue else {"queue": queue}
    now = time.time()
    due = now + countdown if countdown else None
    outgoing = [message.sent_at(now, due).to_wire() for message in messages]
    if countdown:
        options["countdown"] = countdown
    timeout = node.config.timeout_seconds
    if timeout:
        options["soft_time_limit"] = timeout * 1.5 + 1
    if len(outgoing) == 1:
        kwargs: dict[str, Any] = {"msg": outgoing[0]}
        shown = repr({"msg": _shown(outgoing[0])})
    else:
        kwargs = {"msgs": outgoing}
        shown = repr({"msgs": [_shown(wire) for wire in outgoing]})
    app.send_task(node_task_name(node.uses), kwargs=kwargs, argsrepr="()", kwargsrepr=shown, **options)
    sent = time.time()
    return [message.sent_at(sent, due) for message in messages]


def _shown(wire: dict[str, Any]) -> dict[str, Any]:
    """A node message as Flower shows it (`SHOWN_FIELDS`)."""
    return {key: "..." if isinstance(value, dict) else value for key, value in wire.items() if key in SHOWN_FIELDS}


def publish_groups(app: Celery, graph: Graph, groups: Sequence[Sequence[NodeMessage]]) -> list[NodeMessage]:
    """Send several task messages in one go: on `azurequeue://` the immediate ones to a queue
    travel as few Azure messages (bundles; each stays its own Celery task). Returns every message
    stamped with the time all sends returned."""
    with bundled():
        for group in groups:
            publish_together(app, graph, group)
    sent = time.time()
    return [message.sent_at(sent) for group in groups for message in group]


def child_run_id(run_id: str, node_id: str, iteration: int, attempt: int = 1) -> str:
    """The id of a subflow node's child run: derived from the node execution and its attempt
    (so a redelivery finds the same child, and each attempt starts a child of its own; the
    first attempt's id has no attempt part), and hashed when it would exceed the id length limit."""
    plain = f"{run_id}.{node_id}.{iteration}" + (f".a{attempt}" if attempt > 1 else "")
    if len(plain) <= MAX_ID_LENGTH:
        return plain
    digest = hashlib.sha256(plain.encode()).hexdigest()[:40]
    return f"{run_id[:MAX_ID_LENGTH - 42]}.{digest}"


def broker_endpoint(app: Celery) -> str:
    """Where the broker is, for messages: the queue endpoint of the storage account when known."""
    url = str(app.conf.broker_url or "")
    if url.startswith("azurequeue://") and "@" not in url:
        conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "")
        parts = dict(p.split("=", 1) for p in conn.split(";") if "=" in p)
        if parts.get("QueueEndpoint"):
            return parts["QueueEndpoint"]
        if parts.get("AccountName"):
            return f"https://{parts['AccountName']}.queue.{parts.get('EndpointSuffix', 'core.windows.net')}"
        return "azurequeue:// (no AZURE_STORAGE_CONNECTION_STRING)"
    return url.split("@", 1)[-1] if "@" in url else url


def publish_within(app: Celery, graph: Graph, messages: Iterable[NodeMessage], timeout: float) -> list[NodeMessage]:
    """Publish messages (one task each), giving up after `timeout` seconds (InfrastructureError
    naming the broker endpoint): the SDK's own retries against an unreachable endpoint take minutes.
    Returns them as sent."""
    where = f"broker at {broker_endpoint(app)}"
    try:
        return SENDERS.run(lambda: publish_groups(app, graph, [[message] for message in messages]), timeout)
    except SendTimeout:
        raise InfrastructureError(f"{where} did not take the start messages within {timeout:g} s") from None
    except Exception as exc:
        raise InfrastructureError.wrap(where, exc) from exc
