"""Evidence that a node message is in a worker's hands: taken off its queue, not yet started.

A worker takes messages ahead of running them (Celery's prefetch). Until one starts, it is
invisible on its queue and holds no execution lease, so neither the queue's front nor the lease
shows it, and under load it may wait there for seconds. Workers list those messages on request
(`celery inspect reserved`, over the remote-control channel). Reconcile asks once per pass, and
only when a message looks lost; a worker that does not answer in time (dead, or too busy) gives
no evidence, so a killed worker's messages are still re-sent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from celery import Celery

from flowcraft_celery.stores.guard import log_level
from flowcraft_celery.stores.ledger import token

logger = logging.getLogger("flowcraft.reconcile")

#: Seconds reconcile waits for the workers' lists of reserved messages.
REPLY_TIMEOUT = 1.5


def _members(request: Any) -> Iterable[dict[str, Any]]:
    """The node payloads of one reserved task request (`msg`, or the `msgs` of a packed group)."""
    kwargs = request.get("kwargs") if isinstance(request, dict) else None
    if not isinstance(kwargs, dict):
        return []
    members = kwargs.get("msgs") if kwargs.get("msgs") is not None else [kwargs.get("msg")]
    return [m for m in members or [] if isinstance(m, dict) and "run" in m and "node" in m]


class WorkerHands:
    """The node messages that live workers have taken but not started, asked for once."""

    def __init__(self, app: Celery, timeout: float = REPLY_TIMEOUT) -> None:
        self._app = app
        self._timeout = timeout
        self._held: set[tuple[str, str]] | None = None

    def _ask(self) -> set[tuple[str, str]]:
        """(run, token) of every message the answering workers hold reserved."""
        held: set[tuple[str, str]] = set()
        try:
            replies = self._app.control.inspect(timeout=self._timeout).reserved() or {}
        except Exception as exc:  # no evidence: the caller treats the message as lost
            logger.log(log_level(exc, logging.WARNING), "could not ask the workers which messages they hold: %s",
                       exc)
            return held
        for requests in replies.values():
            for request in requests or []:
                for member in _members(request):
                    held.add((str(member["run"]), token(str(member["node"]), int(member.get("it") or 0))))
        return held

    def hold(self, run_id: str, node_token: str) -> bool:
        """Whether a worker answered that it holds this message, not yet started."""
        if self._held is None:
            self._held = self._ask()
        return (run_id, node_token) in self._held
