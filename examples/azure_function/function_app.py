"""An Azure Functions app (Python v2 model) that runs flowcraft node messages without a Celery worker.

Each message on the node queue triggers one invocation, which runs the node through
`flowcraft_celery.distributed.serverless.process_message`; successors and retries are published back to
the queue by the app as usual. Configure it with the same settings as a worker
(AZURE_STORAGE_CONNECTION_STRING, AZURE_COSMOS_CONNECTION_STRING, REDIS_URL,
FLOWCRAFT_NODE_MODULES, FLOWCRAFT_BLUEPRINTS) and set FLOWCRAFT_AZURE_QUEUE to the Azure queue
name the transport uses for FLOWCRAFT_DEFAULT_QUEUE (`flowcraft` maps to `flowcraft`; see
`transports.azurequeue.naming.azure_queue_name`).
"""

from __future__ import annotations

import azure.functions as func

from flowcraft_celery.distributed.serverless import process_message

app = func.FunctionApp()


@app.queue_trigger(arg_name="message", queue_name="%FLOWCRAFT_AZURE_QUEUE%",
                   connection="AZURE_STORAGE_CONNECTION_STRING")
def run_node(message: func.QueueMessage) -> None:
    """Run one node message; raising leaves it to the host's retries and poison queue."""
    process_message(message.get_body().decode("utf-8"))
