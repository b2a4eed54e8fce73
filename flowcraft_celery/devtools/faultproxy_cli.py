"""`flowcraft-celery fault-proxy`: Azure's throttling answers in front of the dev services (see `faultproxy`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from flowcraft_celery.devtools.devservices import HOST, Ports, env_vars, render_exports


@click.command("fault-proxy")
@click.option("--rule", "rules", multiple=True, metavar="SERVICE[/KIND,..]=ANSWER@RATE",
              help="Inject ANSWER (queue/blob: 503, 500, reset; cosmos: 429, 408, 503, reset) into a share RATE "
                   "of the requests, e.g. queue=503@0.1, cosmos=429@0.1, queue/send=500@0.05. Repeatable.")
@click.option("--latency-ms", type=float, default=0.0, show_default=True,
              help="Median added latency of every request (exponentially distributed).")
@click.option("--tail", type=float, default=0.0, show_default=True, help="Share of requests held --tail-seconds.")
@click.option("--tail-seconds", type=float, default=2.0, show_default=True)
@click.option("--retry-after-ms", type=int, default=100, show_default=True, help="x-ms-retry-after-ms of a 429.")
@click.option("--queue-rate", "queue_rates", multiple=True, metavar="[QUEUE=]MESSAGES_PER_S",
              help="Limit message operations per second of one Azure queue (or of each: no QUEUE=).")
@click.option("--partition-ru", type=float, default=0.0, show_default=True,
              help="Request units per second of each Cosmos partition (0: no limit).")
@click.option("--queue-port", type=int, default=0, help="Proxy port for Queue Storage (0: any free port).")
@click.option("--blob-port", type=int, default=0, help="Proxy port for Blob Storage (0: any free port).")
@click.option("--cosmos-port", type=int, default=0, help="Proxy port for Cosmos DB (HTTPS; 0: any free port).")
@click.option("--queue-upstream", help="Queue Storage to forward to (default: the dev services' Azurite).")
@click.option("--blob-upstream", help="Blob Storage to forward to (default: the dev services' Azurite).")
@click.option("--cosmos-upstream", help="Cosmos DB to forward to (default: the dev services' emulator).")
@click.option("--ports-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the proxy's ports here (JSON) once it listens.")
@click.option("--seed", type=int, default=None, help="Seed of the fault dice (repeatable runs).")
def fault_proxy_command(rules: tuple[str, ...], latency_ms: float, tail: float, tail_seconds: float,
                        retry_after_ms: int, queue_rates: tuple[str, ...], partition_ru: float, queue_port: int,
                        blob_port: int, cosmos_port: int, queue_upstream: str | None, blob_upstream: str | None,
                        cosmos_upstream: str | None, ports_file: Path | None, seed: int | None) -> None:
    """Serve a fault proxy in front of the dev services (their ports: FLOWCRAFT_AZURITE_*_PORT,
    FLOWCRAFT_COSMOS_PORT) until stopped; print the environment that points the app at it.

    Azure answers no routinely: Storage 503 ServerBusy / 500 OperationTimedOut, Cosmos DB 429 with
    x-ms-retry-after-ms. This proxy says it at the rates you choose, so you can see your workflows
    slow down, not fail. GET /__faultproxy__/stats on any proxy port shows what it did; PUT
    /__faultproxy__/plan changes the plan while it runs.
    """
    try:
        from flowcraft_celery.devtools import faultproxy
    except ImportError as exc:
        raise click.ClickException(
            f"the fault proxy needs aiohttp: pip install 'flowcraft-celery[faults]' ({exc})") from exc
    try:
        limits: dict[str, float] = {}
        for item in queue_rates:
            name, sep, rate = item.rpartition("=")
            limits[name if sep else "*"] = float(rate)
        plan = faultproxy.FaultPlan(rules=tuple(faultproxy.Rule.parse(r) for r in rules), latency_ms=latency_ms,
                                    tail=tail, tail_seconds=tail_seconds, retry_after_ms=retry_after_ms,
                                    queue_rates=limits, partition_ru=partition_ru)
    except (faultproxy.PlanError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    ports = Ports.from_env()
    routes = [faultproxy.Route("queue", queue_port, queue_upstream or f"http://{HOST}:{ports.queue}"),
              faultproxy.Route("blob", blob_port, blob_upstream or f"http://{HOST}:{ports.blob}"),
              faultproxy.Route("cosmos", cosmos_port, cosmos_upstream or f"https://{HOST}:{ports.cosmos}", tls=True)]

    def ready(listening: dict[str, int]) -> None:
        if ports_file is not None:
            ports_file.write_text(json.dumps(listening))
        click.echo(f"fault proxy listening: {listening}; plan {json.dumps(plan.to_json())}", err=True)
        click.echo(render_exports(faultproxy.proxied_env(env_vars(ports), listening)), nl=False)
        sys.stdout.flush()  # `fault-proxy ... > proxy.env &` then `source proxy.env`

    def run() -> Any:
        return faultproxy.serve(routes, plan, ready, seed)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":  # tests and benchmarks start it as `python -m flowcraft_celery.devtools.faultproxy_cli`
    fault_proxy_command()
