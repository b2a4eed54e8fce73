"""Plain-text tables and time formats for the commands that print for people (`runs`, `show`, `queues`, ...)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from flowcraft_celery.model.printable import printable

#: Longest cell a table shows (longer text is cut, saying how long it was).
CELL_LIMIT = 300


def render_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart, as wide as their widest cell; no trailing blanks.
    Cells are printed escaped and cut (`printable`): a value never breaks a row."""
    rows = [[printable(cell, CELL_LIMIT) for cell in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    return [line(columns), *(line(r) for r in rows)]


def clock(when: float | None) -> str:
    """Local wall-clock time with milliseconds (`14:03:07.250`), or '' when unknown."""
    if not when:
        return ""
    return time.strftime("%H:%M:%S", time.localtime(when)) + f".{int(when * 1000) % 1000:03d}"


def seconds(value: float | None) -> str:
    """A duration for people: `850 ms`, `4.2 s`, `3 min 05 s`, `2 h 07 min`, `3 d 4 h`; '' when unknown."""
    if value is None:
        return ""
    if value < 1:
        return f"{max(0.0, value) * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"
