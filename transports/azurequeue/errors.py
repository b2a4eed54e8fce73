"""The base of every error the `azurequeue://` transport raises on purpose.

The transport stands alone (it imports nothing of flowcraft_celery), so its errors have a base of their
own; each also keeps its builtin base (`class PoisonMessage(AzureQueueError, ValueError)`).
"""

from __future__ import annotations


class AzureQueueError(Exception):
    """An error of the `azurequeue://` transport (a message it cannot read, a broker or credential problem)."""
