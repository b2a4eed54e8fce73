"""What kind of failure an exception is: the one place that decides what a retry can fix.

- `InfrastructureError`: a store or the broker could not be reached or answered with a
  transient error (Cosmos, Redis, Azure Storage timeouts, refused connections, throttling).
  Retried with back-off; never a node attempt, never a run failure by itself.
- `PermanentError`: a value no retry can store (over the store's size limit, not JSON). The
  node that produced it fails at once, with the reason.
- anything else raised by node code is the node's own failure and follows its retry policy.

An exception counts as what its cause chain holds (`raise MyError(...) from exc` in node code
keeps the infrastructure error visible). `InfrastructureError` carries only text, so it crosses
process boundaries (Celery pickles a retry's exception) where SDK exceptions do not.
"""

from __future__ import annotations

from typing import Literal

from flowcraft_celery.errors import FlowcraftError

FailureKind = Literal["infrastructure", "permanent", "node"]


class InfrastructureError(FlowcraftError, RuntimeError):
    """A store or the broker failed transiently; the operation may succeed when retried."""

    @classmethod
    def wrap(cls, service: str, exc: BaseException) -> InfrastructureError:
        """An InfrastructureError naming the service and the original error (text only)."""
        detail = str(exc).splitlines()[0] if str(exc) else ""
        return cls(f"{service} unavailable: {type(exc).__name__}: {detail}"[:500])


class PermanentError(FlowcraftError, ValueError):
    """A failure no retry can fix (a value too large for the store, a value that is not JSON)."""


class ValueNotJsonError(PermanentError):
    """A context value or output cannot be stored as JSON; names the key."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"value for key {key!r} is not JSON: {reason}")
        self.key = key


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes/contexts, outermost first (each once)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def classify(exc: BaseException) -> FailureKind:
    """Infrastructure, permanent, or the node's own failure (the first marked error in the chain)."""
    for link in _chain(exc):
        if isinstance(link, InfrastructureError):
            return "infrastructure"
        if isinstance(link, PermanentError):
            return "permanent"
    return "node"


def permanent_cause(exc: BaseException) -> PermanentError | None:
    """The PermanentError in the exception's chain, if any."""
    return next((link for link in _chain(exc) if isinstance(link, PermanentError)), None)
