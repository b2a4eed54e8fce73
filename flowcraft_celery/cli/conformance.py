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
    """Run every scenario of SCENARIOS_FILE; print PASS/FAIL lines and `N passed, M failed`.

    In celery mode the workers' logs are read too: a rebuild of a run's Redis state with healthy
    services is a failure (a line says how many)."""
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
    rebuilds = 0
    with contextlib.ExitStack() as stack:
        executor: Mode = LocalMode()
        logs: list[Path] = []
        if mode == "celery":
            executor, logs = stack.enter_context(_celery_mode(scenarios_file, workers, external_workers))
        reports = []
        for report in run_scenarios(scenarios, executor, only):
            click.echo(report.line())
            reports.append(report)
        if mode == "celery" and not external_workers:
            rebuilds = _rebuilds_logged(logs)
            click.echo(f"{'FAIL' if rebuilds else 'PASS'} workers rebuilt a run's Redis state {rebuilds} times "
                       "(with healthy services this must be 0)")
    click.echo(summary(reports))
    sys.exit(0 if all(r.passed for r in reports) and not rebuilds else EXIT_FAILED)


#: The log line a worker writes each time it rebuilds a run's Redis state from Cosmos.
REBUILD_LINE = b"rebuilt from Cosmos as generation"


def _rebuilds_logged(logs: list[Path]) -> int:
    """How many times the workers logged a rebuild of a run's Redis state."""
    return sum(log.read_bytes().count(REBUILD_LINE) for log in logs if log.exists())


@contextlib.contextmanager
def _celery_mode(scenarios_file: str, workers: int, external: bool) -> Iterator[tuple[Any, list[Path]]]:
    """Environment for the scenarios, workers started (unless external): the Celery mode and the
    workers' log files."""
    from flowcraft_celery.devtools.conformance import scenarios_env

    tag = uuid.uuid4().hex[:8]
    name = f"conf-{tag}"
    recorded = os.environ.get("FLOWCRAFT_CONFORMANCE_KEY", f"flowcraft:{name}")
    env = scenarios_env(scenarios_file, recorded)
    if not external:
        env.update({"FLOWCRAFT_DEFAULT_QUEUE": name, "FLOWCRAFT_KEY_PREFIX": f"{name}:",
                    "FLOWCRAFT_COSMOS_DATABASE": name})
    os.environ.update(env)
    from flowcraft_celery.devtools.conformance_celery import CeleryMode
    from flowcraft_celery.devtools.workers import WorkerGroup

    if not external:
        click.echo(f"workers of this run: queues, Cosmos DB database and Redis keys named {name} "
                   "(removed at the end)", err=True)
    try:
        with WorkerGroup(env, Path(".services") / f"conformance-{tag}") as group:
            if not external:
                for _ in range(workers):
                    group.worker()  # no -Q: every shard of the default queue (FLOWCRAFT_QUEUE_SHARDS)
                group.wait_ready()
            yield CeleryMode(), group.logs
    finally:
        if not external:
            _remove_own_deployment(name, [f"{name}:", f"{recorded}:"])


def _remove_own_deployment(name: str, key_prefixes: list[str]) -> None:
    """Remove the queues, database and Redis keys of the workers this command started (they were
    named for this run alone); say what could not be removed."""
    from flowcraft_celery.devtools.throwaway import remove_throwaway
    from flowcraft_celery.distributed.app import app

    for problem in remove_throwaway(app, name, name, key_prefixes):
        click.echo(f"could not remove what the run made: {problem}", err=True)
