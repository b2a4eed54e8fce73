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
from typing import Any

from flowcraft_celery.devtools import devservices
from flowcraft_celery.devtools.workers import WorkerGroup

#: The example's context, relative to the checkout (`devservices.repo_root()`).
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


def run_demo(echo: Callable[[str], None], describe: Callable[[Any, str], list[str]] | None = None) -> int:
    """Run the demo; return the exit status (0 when the run completed). `describe(client, run_id)`
    gives the lines that show the finished run's nodes (the CLI passes `show`'s table)."""
    os.environ.update(devservices.up())
    root = devservices.repo_root()  # the demo works from any directory
    tag = uuid.uuid4().hex[:6]
    env = demo_env(tag)
    env["FLOWCRAFT_BLUEPRINTS"] = str(root / env["FLOWCRAFT_BLUEPRINTS"])
    os.environ.update(env)
    from flowcraft_celery.distributed.client import Client

    with WorkerGroup(env, root / ".services" / f"demo-{tag}", cwd=root) as group:
        group.worker()  # without -Q: the node tasks' queue and the reconcile queue
        group.worker()
        group.beat()
        group.wait_ready()
        echo(f"2 workers and beat are up (logs in {group.log_dir})")
        client = Client()
        context = json.loads((root / EXAMPLE_CONTEXT).read_text(encoding="utf-8"))
        started = time.time()
        run = client.start("order-flow", context)
        echo(f"started run {run.run_id} of order-flow")
        doc = run.wait(180)
        took = time.time() - started
        result = client.result(run.run_id)
        echo(json.dumps({"status": doc.get("status"), "errors": result["errors"],
                         "notify_customer": result["context"].get("notify_customer"),
                         "shipment": result["context"].get("shipment")}, indent=2))
        echo(f"run {doc.get('status')} in {took:.1f} s. Its nodes (`flowcraft-celery show`):")
        echo("")
        if describe is not None:
            for line in describe(client, run.run_id):
                echo(line)
        else:
            for node_token, at in client.runtime.ledger.finish_times(run.run_id):
                echo(f"  {at - started:6.2f}  {node_token}")
        if doc.get("status") == "completed":
            echo("")
            echo("charge_payment failed its first attempt on purpose (a flaky payment gateway) and its retry "
                 "succeeded; decide chose `ship`, so hold_for_review did not run. The nodes are in "
                 "examples/order_nodes.py, the graph in examples/order-flow.json.")
    echo("workers and beat stopped; the dev services keep running (`flowcraft-celery services down` "
         "stops the ones it started)")
    return 0 if doc.get("status") == "completed" else 1
