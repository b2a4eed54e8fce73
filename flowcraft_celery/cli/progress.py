"""What `start --wait` shows: a progress line while the run goes on, and the user's context."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import click

#: Context keys the engine writes for itself (each node's output is also under its plain id).
INTERNAL_PREFIX = "_outputs."


def user_context(context: Mapping[str, Any] | None) -> dict[str, Any]:
    """The context without the engine's internal `_outputs.*` keys."""
    return {k: v for k, v in (context or {}).items() if not k.startswith(INTERNAL_PREFIX)}


def progress_printer(runtime: Any, run_id: str) -> Callable[[Any], None]:
    """An `on_poll` callback printing `status  elapsed  n succeeded, n running, ...` to stderr:
    rewritten in place on a terminal, a new line per change otherwise."""
    from flowcraft_celery.distributed.runview import run_view

    started = time.monotonic()
    tty = sys.stderr.isatty()
    last = [""]

    def show(doc: Any) -> None:
        counts = run_view(runtime, run_id, doc=doc).counts()
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no node started"
        text = f"{doc.get('status')}: {summary}"
        if tty:
            click.echo(f"\r{text}  {time.monotonic() - started:.1f} s\033[K", err=True, nl=False)
        elif text != last[0]:
            click.echo(f"{text}  {time.monotonic() - started:.1f} s", err=True)
        last[0] = text

    return show
