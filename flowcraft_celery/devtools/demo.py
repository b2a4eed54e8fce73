"""`flowcraft-celery demo`: the example order workflow on real Celery workers and beat.

Brings the dev services up, starts two workers and beat over Azure Queue Storage (Azurite),
Cosmos DB (emulator) and Redis, runs `examples/order-flow.json`, prints the result and a
per-node timeline, and stops what it started.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from flowcraft_celery.devtools import devservices
from flowcraft_celery.devtools.workers import WorkerGroup

EXAMPLE_CONTEXT = Path("examples/contexts/order.json")


def demo_env(tag: str) -> dict[str, str]:
    """Settings for the demo: the example's nodes and blueprints on queues and keys of its own."""
    return {
        "FLOWCRAFT_NODE_MODULES": "examples.order_nodes",
        "FLOWCRAFT_BLUEPRINTS": "examples/order-flow.json",
        "FLOWCRAFT_DEFAULT_QUEUE": f"demo-{tag}",
        "FLOWCRAFT_KEY_PREFIX": f"demo-{tag}:",
        "FLOWCRAFT_COSMOS_DATABASE": "flowcraft-demo",
    }


def run_demo(echo: Callable[[str], None]) -> int:
    """Run the demo; return the exit status (0 when the run completed)."""
    os.environ.update(devservices.up())
    tag = uuid.uuid4().hex[:6]
    env = demo_env(tag)
    os.environ.update(env)
    from flowcraft_celery.distributed.client import Client

    with WorkerGroup(env, Path(".services") / f"demo-{tag}") as group:
        group.worker()  # without -Q: the node tasks' queue and the reconcile queue
        group.worker()
        group.beat()
        group.wait_ready()
        echo(f"2 workers and beat are up (logs in {group.log_dir})")
        client = Client()
        context = json.loads(EXAMPLE_CONTEXT.read_text(encoding="utf-8"))
        started = time.time()
        run = client.start("order-flow", context)
        echo(f"started run {run.run_id} of order-flow")
        doc = run.wait(180)
        result = client.result(run.run_id)
        echo(json.dumps({"status": doc.get("status"), "errors": result["errors"],
                         "notify_customer": result["context"].get("notify_customer"),
                         "shipment": result["context"].get("shipment")}, indent=2))
        echo("timeline (seconds after start, node finished):")
        for node_token, at in client.runtime.ledger.finish_times(run.run_id):
            echo(f"  {at - started:6.2f}  {node_token}")
    echo("workers and beat stopped; the dev services keep running (`flowcraft-celery services down` "
         "stops the ones it started)")
    return 0 if doc.get("status") == "completed" else 1
