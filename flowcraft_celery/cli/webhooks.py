"""`flowcraft-celery webhooks serve`: the HTTP endpoint that resumes waiting webhook nodes."""

from __future__ import annotations

import click


@click.group("webhooks")
def webhooks_group() -> None:
    """Webhook nodes: each waiting node has a URL; a POST of JSON to it resumes the node."""


@webhooks_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
def serve_command(host: str, port: int) -> None:
    """Serve webhook URLs: POST <FLOWCRAFT_WEBHOOK_BASE_URL>/<run>/<node>/<iteration>/<token>.

    The body (JSON) becomes the node's output `{url, body}`; `?action=NAME` chooses its edges
    like `resume`. A wrong or already used token gets 404, a bad body or action 400, a resume
    202. Set FLOWCRAFT_WEBHOOK_BASE_URL to the address callers reach this server at (its path
    is where the server listens).
    """
    from flowcraft_celery.distributed.app import app
    from flowcraft_celery.distributed.ops.webhook_server import serve
    from flowcraft_celery.settings import Settings

    base = Settings.from_conf(app.conf).webhook_base_url
    click.echo(f"serving webhooks on http://{host}:{port} for URLs under {base}", err=True)
    serve(app, host, port)
