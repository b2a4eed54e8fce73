"""Webhook nodes: a waiting node's URL registered with an unguessable token, and a POST to it delivered as the
node's resume.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Celery

from flowcraft_celery.distributed.core.message import NodeMessage
from flowcraft_celery.distributed.core.runtime import Runtime
from flowcraft_celery.distributed.runs.control import resume_run
from flowcraft_celery.distributed.runs.errors import RunError
from flowcraft_celery.distributed.runs.graphs import run_graph
from flowcraft_celery.engine.builtins import (
    new_webhook_secret,
    webhook_key,
    webhook_secret_matches,
    webhook_url,
)
from flowcraft_celery.engine.semantics import check_resume_action
from flowcraft_celery.errors import FlowcraftError
from flowcraft_celery.model.json_values import check_json
from flowcraft_celery.stores.ledger import token

logger = logging.getLogger("flowcraft.webhooks")


class WebhookRefused(FlowcraftError):
    """A POST that resumes nothing; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def register_webhook(rt: Runtime, msg: NodeMessage) -> str:
    """Give a starting webhook node its URL (the same one again on a redelivery); return it."""
    run_id, node_id, iteration, node_token = msg.run_id, msg.node_id, msg.iteration, msg.token
    entry = rt.ledger.pending(run_id).get(node_token)
    known = NodeMessage.from_wire(entry).webhook if entry is not None else None
    url = known or webhook_url(rt.settings.webhook_base_url, run_id, node_id, iteration, new_webhook_secret())
    rt.ledger.update_pending(run_id, node_token, msg.but(webhook=url).to_wire())
    rt.contexts.set(run_id, webhook_key(node_id), url)
    return url


def deliver_webhook(app: Celery, rt: Runtime, run_id: str, node_id: str, iteration: int, secret: str,
                    body: Any, action: str | None = None) -> str:
    """Resume the webhook node a POST names, if its token is right and unused; return its token.

    WebhookRefused(404) for an unknown run or node, a wrong token or one already used;
    WebhookRefused(400) for a body JSON cannot carry or an action no edge takes.
    """
    node_token = token(node_id, iteration)
    entry = rt.ledger.pending(run_id).get(node_token) if rt.statuses.get(run_id) else None
    pending = NodeMessage.from_wire(entry) if entry is not None else None
    url = pending.webhook if pending is not None else None
    if not url or node_token not in rt.ledger.awaiting(run_id) or not webhook_secret_matches(url, secret):
        raise WebhookRefused(404, "no webhook waits at this URL (wrong or already used token)")
    blueprint = rt.blueprints.get(pending.blueprint_id) if pending is not None else None
    if pending is None or blueprint is None:
        raise WebhookRefused(404, "no webhook waits at this URL (its blueprint is not known here)")
    try:
        check_json(body, "webhook body")
        check_resume_action(run_graph(rt, blueprint, run_id, pending.dynamic), node_id, action, iteration)
    except ValueError as exc:  # checked before the token is taken, so a corrected POST can follow
        raise WebhookRefused(400, str(exc)) from exc
    if not rt.coordination.claim(f"webhook:{run_id}:{node_token}", uuid.uuid4().hex):
        raise WebhookRefused(404, "no webhook waits at this URL (wrong or already used token)")
    try:
        return resume_run(app, rt, run_id, action, body, node_id)
    except RunError as exc:
        raise WebhookRefused(400, str(exc)) from exc
