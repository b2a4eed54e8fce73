"""`flowcraft-celery metrics`: serve the deployment's Prometheus metrics over HTTP."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any

import click


@click.command("metrics")
@click.option("--port", default=9808, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port of the /metrics endpoint (0: any free port, printed).")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 for every interface).")
@click.option("--queue-interval", default=15.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds between refreshes of queue depths (each costs Azure requests).")
@click.option("--runs-interval", default=60.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds between refreshes of the run counts (each costs Cosmos queries).")
def metrics_command(port: int, address: str, queue_interval: float, runs_interval: float) -> None:
    """Serve Prometheus metrics at http://ADDRESS:PORT/metrics until stopped (Ctrl-C, SIGTERM).

    Queue depths, delayed and dead-lettered messages, runs by status, node attempts (started,
    succeeded, retried, failed) and reconcile passes; run one per deployment.
    """
    from prometheus_client import CollectorRegistry, start_http_server

    from flowcraft_celery.distributed.app import app
    from flowcraft_celery.distributed.ops.metrics import FlowcraftCollector

    registry = CollectorRegistry()
    registry.register(FlowcraftCollector(app, queue_interval, runs_interval))
    server, thread = start_http_server(port, address, registry=registry)
    click.echo(f"serving metrics on http://{address}:{server.server_port}/metrics", err=True)
    stop = threading.Event()

    def finish(*_: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, finish)
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    server.shutdown()
    thread.join(5)
