"""A node execution's routing decision: made once, recorded with its output, replayed as is.

When a node execution (node, iteration) completes, the engine chooses which of its candidate
out-edges are taken (SPEC §3.2) and what each taken edge with a transform hands over, against
the context at that moment. That choice is written in the same store write as the output, and
everything that later derives the run's frontier (completion, reconcile, recovery after Redis
lost its state, `show`) reads it back: no condition or transform is evaluated twice for one
execution, so a node writing a key later cannot change which way an earlier node went.

Edges are named by their position among the deciding node's candidates
(`semantics.candidate_edges`), which the run's graph fixes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Decision:
    """Which candidate edges of `node` were taken, and the transformed values they hand over."""

    #: The node whose candidates these are: the one that ran (a fallback, for its original's copy).
    node: str
    #: Positions of the taken edges among the node's candidates, in order.
    taken: tuple[int, ...]
    #: Position -> value handed over, for taken edges with a transform (the others hand the output).
    values: Mapping[int, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored with the output."""
        out: dict[str, Any] = {"node": self.node, "taken": list(self.taken)}
        if self.values:
            out["values"] = {str(k): v for k, v in self.values.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        """Inverse of `to_dict`."""
        values = data.get("values") or {}
        return cls(str(data["node"]), tuple(int(i) for i in data.get("taken") or ()),
                   {int(k): v for k, v in values.items()})
