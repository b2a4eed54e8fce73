"""An Azure Functions app (Python v2 model, HTTP trigger) that resumes waiting webhook nodes.

The serverless counterpart of `flowcraft-celery webhooks serve`: a POST of JSON to
`<FLOWCRAFT_WEBHOOK_BASE_URL>/<run>/<node>/<iteration>/<token>` resumes that webhook node with
the body (its output becomes `{url, body}`; `?action=NAME` chooses its edges). Deploy it with
the same settings as the workers (AZURE_STORAGE_CONNECTION_STRING, AZURE_COSMOS_CONNECTION_STRING,
REDIS_URL, FLOWCRAFT_BLUEPRINTS, FLOWCRAFT_NODE_MODULES), and set FLOWCRAFT_WEBHOOK_BASE_URL on
the workers to `https://<function app host>/webhooks` (host.json clears the `api/` route prefix).
A wrong or already used token gets 404, a body that is not JSON or an action no edge takes 400.
"""

from __future__ import annotations

import json

import azure.functions as func

from flowcraft_celery.distributed.app import app as celery_app
from flowcraft_celery.distributed.core.runtime import runtime_for
from flowcraft_celery.distributed.ops.webhook_server import parse_body
from flowcraft_celery.distributed.runs.webhooks import WebhookRefused, deliver_webhook

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)  # the URL's token is the credential


def _json(status: int, payload: dict[str, object]) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload), status_code=status, mimetype="application/json")


@app.route(route="webhooks/{run}/{node}/{iteration:int}/{token}", methods=["POST"])
def resume_webhook(req: func.HttpRequest) -> func.HttpResponse:
    """Resume the webhook node the URL names with the request's JSON body."""
    params = req.route_params
    try:
        body = parse_body(req.get_body())
        resumed = deliver_webhook(celery_app, runtime_for(celery_app.conf), params["run"], params["node"],
                                  int(params["iteration"]), params["token"], body, req.params.get("action"))
    except WebhookRefused as exc:
        return _json(exc.status, {"error": str(exc)})
    return _json(202, {"runId": params["run"], "resumed": resumed})
