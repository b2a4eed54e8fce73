"""The small Tornado app behind `flowcraft-celery webhooks serve`: POSTs to a webhook node's URL resume it
(blocking store calls on a thread pool).
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlparse

from celery import Celery

from flowcraft_celery.distributed.core.runtime import runtime_for
from flowcraft_celery.distributed.runs.webhooks import WebhookRefused, deliver_webhook
from flowcraft_celery.settings import Settings

logger = logging.getLogger("flowcraft.webhooks")


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

    base = Settings.from_conf(celery_app.conf).webhook_base_url
    return tornado.web.Application([(route_pattern(base), WebhookHandler)])


def serve(celery_app: Celery, host: str, port: int) -> None:
    """Serve webhook URLs until interrupted."""
    import asyncio

    async def main() -> None:
        make_app(celery_app).listen(port, address=host)
        await asyncio.Event().wait()

    asyncio.run(main())
