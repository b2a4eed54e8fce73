"""Runs the example order workflow with no worker: each queue message goes through `process_message`.

Started by test_serverless.py in a subprocess (the app reads its settings from the environment
at import). Prints the final status document as JSON on its last line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from azure.storage.queue import QueueClient

from flowcraft_celery.distributed.client import Client
from flowcraft_celery.distributed.serverless import process_message
from transports.azurequeue.naming import azure_queue_name


def main() -> int:
    client = Client()
    run = client.start("order-flow", json.loads(Path("examples/contexts/order.json").read_text()))
    queue = QueueClient.from_connection_string(
        os.environ["AZURE_STORAGE_CONNECTION_STRING"],
        azure_queue_name(os.environ["FLOWCRAFT_DEFAULT_QUEUE"], os.environ.get("FLOWCRAFT_QUEUE_PREFIX", "")))
    processed = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = client.status(run.run_id).get("status")
        if status not in ("running",):
            break
        for message in queue.receive_messages(max_messages=32, visibility_timeout=60):
            processed += len(process_message(message.content))  # a bundle carries several tasks
            queue.delete_message(message)
        time.sleep(0.2)
    doc = client.status(run.run_id)
    print(json.dumps({"processed": processed, "status": doc.get("status"),
                      "context": (doc.get("result") or {}).get("context", {})}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
