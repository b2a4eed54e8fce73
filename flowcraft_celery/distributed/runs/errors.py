"""Errors of run operations: what cannot be done to a run, and why."""

from __future__ import annotations

from flowcraft_celery.errors import FlowcraftError


class RunError(FlowcraftError, RuntimeError):
    """A run operation cannot be done (unknown run or blueprint, wrong state); says why."""


class StartError(RunError):
    """A run could not be started: nothing of it runs. The message names the failing endpoint."""
