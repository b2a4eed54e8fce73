"""A node execution's loop iteration as one integer, for loops nested in loops.

A node inside nested loops runs once per pass of each loop around it: its execution is named
by its *passes*, one count per enclosing loop, outermost first (`(2, 5)`: the outer loop's
third pass, the inner loop's sixth pass within it). Stores, messages and tokens (`node@it`)
carry one integer, so the passes are written as decimal digit groups: the innermost loop's
count in the last `width` digits, the next one's before it, and so on, the outermost loop's
count in whatever digits lead. With one loop the integer is simply the pass count (a node
outside every loop is 0); with two loops and a width of 6, `(2, 5)` is 2000005.

The width depends only on how deeply the blueprint nests its loops (12 digits shared between
the levels), so a node's iterations grow in the order it runs and stay below `MAX_ITERATION`
(the stores rank a node's outputs by iteration, and the latest one is the one the context
shows).
"""

from __future__ import annotations

from collections.abc import Sequence

from flowcraft_celery.errors import FlowcraftError

#: Every iteration is below this (the Cosmos context store keeps its own items above it).
MAX_ITERATION = 2 ** 40

#: Decimal digits shared by the inner levels of nested loops.
_DIGITS = 12


class IterationOverflowError(FlowcraftError, RuntimeError):
    """A loop would run more passes than its nesting leaves room for."""


def width_for(depth: int) -> int:
    """Digits per inner level for a blueprint whose loops nest `depth` deep."""
    return max(1, _DIGITS // max(depth, 1))


def encode(passes: Sequence[int], width: int) -> int:
    """The integer of a node execution's passes (outermost first); IterationOverflowError when
    an inner count does not fit its digits or the whole reaches MAX_ITERATION."""
    value = 0
    limit = 10 ** width
    for level, count in enumerate(passes):
        if count < 0 or (level > 0 and count >= limit):
            raise IterationOverflowError(f"a loop nested {level + 1} deep would start pass {count + 1}; with loops "
                                         f"nested this deep a loop runs at most {limit} passes per pass of the "
                                         "loop around it")
        value = value * limit + count
    if value >= MAX_ITERATION:
        raise IterationOverflowError(f"iteration {value} would reach the limit of {MAX_ITERATION}; the outermost "
                                     "loop has run too many passes")
    return value


def decode(iteration: int, depth: int, width: int) -> tuple[int, ...]:
    """The passes (outermost first) of a node nested `depth` loops deep, from its iteration."""
    if depth <= 0:
        return ()
    limit = 10 ** width
    inner: list[int] = []
    for _ in range(depth - 1):
        iteration, count = divmod(iteration, limit)
        inner.append(count)
    return (iteration, *reversed(inner))


def label(passes: Sequence[int]) -> str:
    """Passes as people read them: `2.5` (outer loop's pass 2, inner loop's pass 5); `0` outside loops."""
    return ".".join(str(p) for p in passes) or "0"


def parse(text: str, depth: int, width: int) -> int:
    """The iteration a person gave for a node nested `depth` loops deep: its passes as `label`
    shows them (`2.5`, outer loop first), or the iteration number itself (`2000005`; the same
    as the passes for a node in one loop). ValueError naming the value when it is neither, or
    names an execution the node cannot have."""
    example = ".".join("25134"[:depth]) or "0"
    order = ", outer loop first" if depth > 1 else ""
    parts = text.strip().split(".")
    if not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError(f"iteration {text!r} is neither passes like {example!r}{order}, nor an iteration number")
    counts = [int(p) for p in parts]
    if len(counts) == 1:
        value = counts[0]
        if depth == 0 and value != 0:
            raise ValueError(f"iteration {text!r}: the node is outside every loop, so its iteration is 0")
        if value >= MAX_ITERATION:
            raise ValueError(f"iteration {text!r} is over the limit of {MAX_ITERATION}")
        return value
    if len(counts) != depth:
        loops = "outside every loop" if depth == 0 else f"in {depth} loop{'' if depth == 1 else 's'}"
        raise ValueError(f"iteration {text!r} gives {len(counts)} passes, but the node is {loops} "
                         f"(e.g. {example!r}{order})")
    try:
        return encode(counts, width)
    except IterationOverflowError as exc:
        raise ValueError(f"iteration {text!r}: {exc}") from exc
