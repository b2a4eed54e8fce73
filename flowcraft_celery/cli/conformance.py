"""`conformance`: run a scenarios file on the local runner or on real Celery workers."""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from flowcraft_celery.cli.errors import EXIT_FAILED, CommandError


@click.command("conformance")
@click.argument("scenarios_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--mode", type=click.Choice(["local", "celery"]), default="local", show_default=True,
              help="local: the in-process runner; celery: real worker processes over the configured services.")
@click.option("--workers", default=2, show_default=True, help="celery mode: worker processes to start.")
@click.option("--external-workers", is_flag=True,
              help="celery mode: use workers already running with FLOWCRAFT_SCENARIOS set to this file.")
@click.option("-k", "only", default=None, help="Run only scenarios whose name contains this text.")
def conformance_command(scenarios_file: str, mode: str, workers: int, external_workers: bool,
                        only: str | None) -> None:
    """Run every scenario of SCENARIOS_FILE; print PASS/FAIL lines and `N passed, M failed`."""
    from flowcraft_celery.devtools.conformance import (
        LocalMode,
        Mode,
        ScenarioFormatError,
        load_scenarios,
        run_scenarios,
        summary,
    )

    try:
        scenarios = load_scenarios(scenarios_file)
    except ScenarioFormatError as exc:
        raise CommandError(str(exc), EXIT_FAILED) from exc
    with contextlib.ExitStack() as stack:
        executor: Mode = LocalMode()
        if mode == "celery":
            executor = stack.enter_context(_celery_mode(scenarios_file, workers, external_workers))
        reports = []
        for report in run_scenarios(scenarios, executor, only):
            click.echo(report.line())
            reports.append(report)
    click.echo(summary(reports))
    sys.exit(0 if all(r.passed for r in reports) else EXIT_FAILED)


@contextlib.contextmanager
def _celery_mode(scenarios_file: str, workers: int, external: bool) -> Iterator[Any]:
    """Environment for the scenarios, workers started (unless external), and the Celery mode."""
    from flowcraft_celery.devtools.conformance import scenarios_env

    tag = uuid.uuid4().hex[:8]
    env = scenarios_env(scenarios_file, os.environ.get("FLOWCRAFT_CONFORMANCE_KEY", f"flowcraft:conf-{tag}"))
    if not external:
        env.update({"FLOWCRAFT_DEFAULT_QUEUE": f"conf-{tag}", "FLOWCRAFT_KEY_PREFIX": f"conf-{tag}:",
                    "FLOWCRAFT_COSMOS_DATABASE": f"conf-{tag}"})
    os.environ.update(env)
    from flowcraft_celery.devtools.conformance_celery import CeleryMode
    from flowcraft_celery.devtools.workers import WorkerGroup

    with WorkerGroup(env, Path(".services") / f"conformance-{tag}") as group:
        if not external:
            for _ in range(workers):
                group.worker(queues=env["FLOWCRAFT_DEFAULT_QUEUE"])
            group.wait_ready()
        yield CeleryMode()
