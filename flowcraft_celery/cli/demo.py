"""`demo`: the example order workflow on real workers and beat over the dev services."""

from __future__ import annotations

import sys
import time
from typing import Any

import click


@click.command("demo")
def demo_command() -> None:
    """Run the example order workflow on 2 real Celery workers and beat over the dev services."""
    from flowcraft_celery.devtools.demo import run_demo

    sys.exit(run_demo(click.echo, node_table))


def node_table(client: Any, run_id: str) -> list[str]:
    """`show`'s table of the run's nodes: state, attempts, worker, times."""
    from flowcraft_celery.cli.show import view_lines
    from flowcraft_celery.distributed.ops.runview import run_view

    now = time.time()
    return view_lines(run_view(client.runtime, run_id, now), now)
