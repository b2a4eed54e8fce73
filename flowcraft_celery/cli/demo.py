"""`demo`: the example order workflow on real workers and beat over the dev services."""

from __future__ import annotations

import sys

import click


@click.command("demo")
def demo_command() -> None:
    """Run the example order workflow on 2 real Celery workers and beat over the dev services."""
    from flowcraft_celery.devtools.demo import run_demo

    sys.exit(run_demo(click.echo))
