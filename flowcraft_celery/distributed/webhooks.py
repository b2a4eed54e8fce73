"""Webhook nodes on Celery: each waiting node gets a URL with an unguessable token, and an HTTP
POST of JSON to that URL resumes the node with the body (SPEC §6 `webhook`).

- `register_webhook` (the worker, when a webhook node starts): the URL is
  `<flowcraft_webhook_base_url>/<run>/<node>/<iteration>/<token>`; it is kept with the node's
  pending message (so a redelivery keeps the same URL) and shown in the context under
  `_webhooks.<nodeId>`.
- `deliver_webhook` (any process with the app's settings): checks the token in constant time,
  takes it once (a second POST with it is refused), then resumes the node; its output becomes
  `{url, body}` and `?action=` chooses its edges like `resume`.
- `make_app` / `serve`: the small Tornado app behind `flowcraft-celery webhooks serve`; it
  runs the blocking store calls on a thread pool.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any
from urllib.parse import urlparse

from celery import Celery

from flowcraft_celery.distributed.runs import RunError, resume_run, run_graph
from flowcraft_celery.distributed.runtime import Runtime, runtime_for
from flowcraft_celery.engine.builtins import (
    DEFAULT_WEBHOOK_BASE_URL,
    new_webhook_secret,
    webhook_key,
    webhook_secret_matches,
    webhook_url,
)
from flowcraft_celery.engine.semantics import check_resume_action
from flowcraft_celery.model.json_values import check_json
from flowcraft_celery.stores.ledger import token

logger = logging.getLogger("flowcraft.webhooks")


class WebhookRefused(Exception):
    """A POST that resumes nothing; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def register_webhook(rt: Runtime, msg: dict[str, Any]) -> str:
    """Give a starting webhook node its URL (the same one again on a redelivery); return it."""
    run_id, node_id, iteration = msg["run"], msg["node"], int(msg.get("it", 0))
    node_token = token(node_id, iteration)
    pending = rt.ledger.pending(run_id).get(node_token) or {}
    url = str(pending.get("webhook") or webhook_url(rt.webhook_base_url, run_id, node_id, iteration,
                                                     new_webhook_secret()))
    rt.ledger.update_pending(run_id, node_token, dict(msg, webhook=url))
    rt.contexts.set(run_id, webhook_key(node_id), url)
    return url


def deliver_webhook(app: Celery, rt: Runtime, run_id: str, node_id: str, iteration: int, secret: str,
                    body: Any, action: str | None = None) -> str:
    """Resume the webhook node a POST names, if its token is right and unused; return its token.

    WebhookRefused(404) for an unknown run or node, a wrong token or one already used;
    WebhookRefused(400) for a body JSON cannot carry or an action no edge takes.
    """
    node_token = token(node_id, iteration)
    pending = rt.ledger.pending(run_id).get(node_token) if rt.statuses.get(run_id) else None
    url = (pending or {}).get("webhook")
    if not url or node_token not in rt.ledger.awaiting(run_id) or not webhook_secret_matches(str(url), secret):
        raise WebhookRefused(404, "no webhook waits at this URL (wrong or already used token)")
    blueprint = rt.blueprints.get(str(pending["bp"])) if pending else None
    if blueprint is None:
        raise WebhookRefused(404, "no webhook waits at this URL (its blueprint is not known here)")
    try:
        check_json(body, "webhook body")
        check_resume_action(run_graph(rt, blueprint, run_id, bool(pending and pending.get("dyn"))), node_id,
                            action, iteration)
    except ValueError as exc:  # checked before the token is taken, so a corrected POST can follow
        raise WebhookRefused(400, str(exc)) from exc
    if not rt.coordination.claim(f"webhook:{run_id}:{node_token}", uuid.uuid4().hex):
        raise WebhookRefused(404, "no webhook waits at this URL (wrong or already used token)")
    try:
        return resume_run(app, rt, run_id, action, body, node_id)
    except RunError as exc:
        raise WebhookRefused(400, str(exc)) from exc


def parse_body(raw: bytes) -> Any:
    """A POST's JSON body (an empty one is null); WebhookRefused(400) when it is not strict JSON."""

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(raw or b"null", parse_constant=refuse_constant)
    except ValueError as exc:
        raise WebhookRefused(400, f"the body must be JSON: {exc}") from exc


def route_pattern(base_url: str) -> str:
    """The Tornado route of webhook URLs under the base URL's path."""
    prefix = urlparse(base_url).path.rstrip("/")
    return prefix + r"/([^/]+)/([^/]+)/([0-9]+)/([A-Za-z0-9_\-]+)/?"


def make_app(celery_app: Celery) -> Any:
    """The Tornado application serving webhook URLs for the runs of `celery_app`."""
    import tornado.web
    from tornado.ioloop import IOLoop

    class WebhookHandler(tornado.web.RequestHandler):
        """POST <base>/<run>/<node>/<iteration>/<token> with a JSON body (empty: null)."""

        async def post(self, run_id: str, node_id: str, iteration: str, secret: str) -> None:
            action = self.get_query_argument("action", None)  # Tornado has unquoted the path's parts
            try:
                body = parse_body(self.request.body)
                resumed = await IOLoop.current().run_in_executor(
                    None, lambda: deliver_webhook(celery_app, runtime_for(celery_app.conf), run_id, node_id,
                                                  int(iteration), secret, body, action))
            except WebhookRefused as exc:
                self._answer(exc.status, {"error": str(exc)})
                return
            logger.info("webhook resumed run %r at %r", run_id, resumed)
            self._answer(202, {"runId": run_id, "resumed": resumed})

        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            self.set_status(status)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(payload))

    base = str(celery_app.conf.get("flowcraft_webhook_base_url") or DEFAULT_WEBHOOK_BASE_URL)
    return tornado.web.Application([(route_pattern(base), WebhookHandler)])


def serve(celery_app: Celery, host: str, port: int) -> None:
    """Serve webhook URLs until interrupted."""
    import asyncio

    async def main() -> None:
        make_app(celery_app).listen(port, address=host)
        await asyncio.Event().wait()

    asyncio.run(main())
