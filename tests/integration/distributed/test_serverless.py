"""The serverless entry point: a run completes with no worker, one raw queue message at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.names import unique_name

ROOT = Path(__file__).resolve().parents[3]


def test_order_flow_completes_through_process_message_alone() -> None:
    tag = unique_name("sls")
    env = {**os.environ, "FLOWCRAFT_NODE_MODULES": "examples.order_nodes",
           "FLOWCRAFT_BLUEPRINTS": "examples/order-flow.json", "FLOWCRAFT_DEFAULT_QUEUE": tag,
           "FLOWCRAFT_KEY_PREFIX": f"{tag}:", "FLOWCRAFT_COSMOS_DATABASE": tag,
           "CELERY_BROKER_URL": "azurequeue://", "FLOWCRAFT_INLINE_DEPTH": "0"}
    driver = "tests.integration.distributed.serverless_driver"
    result = subprocess.run([sys.executable, "-m", driver], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["status"] == "completed", outcome
    assert outcome["context"]["notify_customer"] == "Your order is on its way."
    # One message per node (inline hops off): 7 nodes, and charge_payment's failed first attempt
    # was retried through a new message.
    assert outcome["processed"] == 8
