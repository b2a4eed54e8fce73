"""What `start --wait` shows: a progress line while the run goes on, and the user's context.

On a terminal the line is rewritten in place; in a file or pipe a line is written when the
state changes (and now and then while it does not), so a log never holds one enormous line.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, TextIO

from flowcraft_celery.cli.tables import seconds

#: Context keys the engine writes for itself (each node's output is also under its plain id).
INTERNAL_PREFIX = "_outputs."
#: In a file or pipe, an unchanged progress line is repeated this often (seconds).
PLAIN_REPEAT_SECONDS = 30.0


def user_context(context: Mapping[str, Any] | None) -> dict[str, Any]:
    """The context without the engine's internal `_outputs.*` keys."""
    return {k: v for k, v in (context or {}).items() if not k.startswith(INTERNAL_PREFIX)}


def run_state(runtime: Any, run_id: str, doc: Any) -> str:
    """`running: 2 succeeded, 1 running`: the run's status and its nodes' states."""
    from flowcraft_celery.distributed.ops.runview import run_view

    counts = run_view(runtime, run_id, doc=doc).counts()
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no node started"
    return f"{doc.get('status')}: {summary}"


class Progress:
    """The progress output of `--wait` on one stream."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.started = time.monotonic()
        self.last = ""
        self.last_at = 0.0
        self.open_line = False

    @property
    def elapsed(self) -> float:
        """Seconds since the progress started."""
        return time.monotonic() - self.started

    def show(self, state: str) -> None:
        """Show the state and the time so far."""
        now = time.monotonic()
        text = f"{state}  {seconds(self.elapsed)}"
        if self.live:
            self.stream.write(f"\r{text}\033[K")
            self.open_line = True
        elif state != self.last or now - self.last_at >= PLAIN_REPEAT_SECONDS:
            self.stream.write(text + "\n")
            self.last_at = now
        self.last = state
        self.stream.flush()

    def note(self, text: str) -> None:
        """A message on a line of its own (a live line continues below it)."""
        self.close()
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the live line."""
        if self.open_line:
            self.stream.write("\n")
            self.stream.flush()
            self.open_line = False
