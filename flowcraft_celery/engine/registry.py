"""Node implementations: the `@node` decorator, class nodes, results, and the registry.

A function node is `fn(ctx) -> result` (sync or `async def`). A class node subclasses `Node`
and overrides the lifecycle phases it needs (SPEC §2). A result is a `NodeResult`, or any
other value, which is taken as the output.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flowcraft_celery.errors import FlowcraftError

if TYPE_CHECKING:
    from flowcraft_celery.engine.context import NodeContext


@dataclass
class NodeResult:
    """What a node returns: output, an action choosing edges, an error, or nodes to add."""

    output: Any = None
    action: str | None = None
    error: str | None = None
    dynamic_nodes: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, value: Any) -> NodeResult:
        """Normalize what an implementation returned: a bare value becomes the output."""
        return value if isinstance(value, NodeResult) else cls(output=value)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used in conditions (`result.output`, `result.action`)."""
        out: dict[str, Any] = {"output": self.output}
        if self.action is not None:
            out["action"] = self.action
        if self.error is not None:
            out["error"] = self.error
        if self.dynamic_nodes:
            out["dynamicNodes"] = self.dynamic_nodes
        return out


class Node:
    """Base class of class nodes: override `exec`, and `prep`/`post`/`fallback`/`recover` if needed.

    Only `exec` is retried and timed; `fallback` runs after the last failed attempt.
    """

    def prep(self, ctx: NodeContext) -> Any:
        """Prepare the input of `exec` (default: the node's input)."""
        return ctx.input

    def exec(self, prepared: Any, ctx: NodeContext) -> Any:
        """The node's main work; may raise to fail the attempt."""
        raise NotImplementedError(f"{type(self).__name__}.exec is not implemented")

    def post(self, result: Any, ctx: NodeContext) -> Any:
        """Turn the `exec` result into the node's result (default: unchanged)."""
        return result

    def fallback(self, error: BaseException, ctx: NodeContext) -> Any:
        """Produce a result after every attempt failed (default: re-raise the error)."""
        raise error

    def recover(self, error: BaseException, ctx: NodeContext) -> None:
        """Clean up after a fatal error in any phase (default: nothing)."""


Implementation = Callable[..., Any] | type[Node] | Node


class UnknownNodeError(FlowcraftError, KeyError):
    """No implementation is registered under a `uses` key."""

    def __init__(self, uses: str, known: list[str]) -> None:
        hint = ", ".join(sorted(known)[:20]) or "none registered"
        super().__init__(f"no node implementation registered as {uses!r} (known: {hint})")
        self.uses = uses

    def __str__(self) -> str:
        return str(self.args[0])


class Registry:
    """Maps `uses` keys to implementations."""

    def __init__(self) -> None:
        self._impls: dict[str, Implementation] = {}

    def register(self, uses: str, impl: Implementation) -> None:
        """Register (or replace) an implementation under `uses`."""
        if not uses:
            raise ValueError("a node implementation needs a non-empty name")
        self._impls[uses] = impl

    def node(self, uses: str) -> Callable[[Any], Any]:
        """Decorator registering a function or a `Node` subclass under `uses`."""

        def decorate(impl: Any) -> Any:
            self.register(uses, impl)
            return impl

        return decorate

    def get(self, uses: str) -> Implementation:
        """The implementation for `uses` (UnknownNodeError names it when absent)."""
        try:
            return self._impls[uses]
        except KeyError:
            raise UnknownNodeError(uses, list(self._impls)) from None

    def __contains__(self, uses: object) -> bool:
        return uses in self._impls

    def __iter__(self) -> Iterator[str]:
        return iter(self._impls)

    def merged(self, other: Registry) -> Registry:
        """A new registry with this one's entries, overridden by `other`'s."""
        out = Registry()
        out._impls = {**self._impls, **other._impls}
        return out


#: The process-wide registry that `@node` fills.
default_registry = Registry()


def node(uses: str) -> Callable[[Any], Any]:
    """Register a function node (sync or async) or a `Node` subclass in the default registry."""
    return default_registry.node(uses)


def import_modules(modules: list[str] | tuple[str, ...]) -> None:
    """Import modules that define nodes (their `@node` decorators fill the default registry).

    The working directory is importable, as with `python -m`, so a project's own modules load
    under `celery worker` too.
    """
    if modules and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in modules:
        if name:
            importlib.import_module(name)
