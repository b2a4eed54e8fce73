"""The base of every error flowcraft-celery raises on purpose, at the bottom of the package's layers.

Each error also keeps its builtin base (`class RunError(FlowcraftError, RuntimeError)`), so callers
that catch `RuntimeError` or `ValueError` still catch it; `except FlowcraftError` catches them all
(the CLI prints them as one line). The Kombu transport stands alone and has its own base
(`transports.azurequeue.AzureQueueError`).
"""

from __future__ import annotations


class FlowcraftError(Exception):
    """An error of flowcraft-celery (a bad setting, blueprint, message or run operation, or a service
    that cannot be reached)."""
