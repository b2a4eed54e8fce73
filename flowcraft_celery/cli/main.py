"""The `flowcraft-celery` command line: validate, run, conformance, dev services, and run control."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from flowcraft_celery.cli.graph import graph_command
from flowcraft_celery.cli.metrics import metrics_command
from flowcraft_celery.cli.progress import progress_printer, user_context
from flowcraft_celery.cli.purge import purge_command
from flowcraft_celery.cli.queues import dlq_group, queues_command
from flowcraft_celery.cli.show import show_command
from flowcraft_celery.cli.webhooks import webhooks_group
from flowcraft_celery.devtools.devservices import services_command
from flowcraft_celery.engine.registry import default_registry, import_modules
from flowcraft_celery.model.blueprint import Blueprint, BlueprintFormatError
from flowcraft_celery.model.catalog import load_blueprints
from flowcraft_celery.model.ids import printable
from flowcraft_celery.model.json_values import NotJsonError, check_json
from flowcraft_celery.model.validation import validate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="flowcraft-celery")
def main() -> None:
    """Flowcraft-style workflows on Celery, Azure Queue Storage, Cosmos DB and Redis."""


main.add_command(services_command)
main.add_command(show_command)
main.add_command(graph_command)
main.add_command(purge_command)
main.add_command(queues_command)
main.add_command(dlq_group)
main.add_command(webhooks_group)
main.add_command(metrics_command)


def _json_option(_: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Parse a JSON option value, naming the option on error."""
    if value is None:
        return None
    try:
        parsed = json.loads(value)
        check_json(parsed, "the value")
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param=param) from exc
    except NotJsonError as exc:
        raise click.BadParameter(str(exc), param=param) from exc
    return parsed


def _load(path: str, blueprint_id: str | None) -> Blueprint:
    try:
        return Blueprint.load(path, blueprint_id)
    except BlueprintFormatError as exc:
        raise click.ClickException(f"{path}: {exc}") from exc


def _registries(modules: tuple[str, ...]) -> None:
    sys.path.insert(0, str(Path.cwd()))
    try:
        import_modules(list(modules))
    except ImportError as exc:
        raise click.ClickException(f"cannot import node module: {exc}") from exc


@main.command("validate")
@click.argument("blueprint_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--registry", "registry_modules", multiple=True, metavar="MODULE",
              help="Module defining nodes; with it, unknown `uses` values are reported.")
@click.option("--blueprints", "blueprint_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of sibling blueprints for subflows (default: the file's folder).")
@click.option("--id", "blueprint_id", default=None, help="Blueprint id when the file has none (default: file name).")
@click.option("--json", "as_json", is_flag=True, help="Print the issues as JSON.")
def validate_command(blueprint_file: str, registry_modules: tuple[str, ...], blueprint_dir: str | None,
                     blueprint_id: str | None, as_json: bool) -> None:
    """Report every problem of BLUEPRINT_FILE at once; exit 1 if any is an error."""
    blueprint = _load(blueprint_file, blueprint_id)
    if registry_modules:
        _registries(registry_modules)
    siblings = load_blueprints([blueprint_dir or str(Path(blueprint_file).parent)])
    issues = validate(blueprint, default_registry if registry_modules else None, siblings)
    errors = [i for i in issues if i.severity == "error"]
    if as_json:
        click.echo(json.dumps([i.to_dict() for i in issues], indent=2))
    else:
        for issue in issues:
            click.echo(printable(f"{issue.severity.upper()} {issue}", limit=2000))
        click.echo(f"{printable(blueprint.id)}: {len(errors)} error(s), {len(issues) - len(errors)} warning(s)")
    sys.exit(1 if errors else 0)


@main.command("run")
@click.argument("blueprint_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--local", "local", is_flag=True, required=True,
              help="Run in this process with in-memory state (use `start` for Celery workers).")
@click.option("--context", "context", callback=_json_option, default=None, metavar="JSON",
              help="Initial context as a JSON object.")
@click.option("--registry", "registry_modules", multiple=True, metavar="MODULE", help="Module defining nodes.")
@click.option("--blueprints", "blueprint_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of sibling blueprints for subflows (default: the file's folder).")
@click.option("--events", is_flag=True, help="Print each event to stderr as it happens.")
def run_command(blueprint_file: str, local: bool, context: Any, registry_modules: tuple[str, ...],
                blueprint_dir: str | None, events: bool) -> None:
    """Run BLUEPRINT_FILE to its end and print {status, context, errors} as JSON.

    Exit status: 0 completed or awaiting, 1 failed, 2 invalid blueprint or arguments.
    """
    from flowcraft_celery.local.runner import LocalRunner

    if context is not None and not isinstance(context, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--context")
    _registries(registry_modules)
    blueprint = _load(blueprint_file, None)
    siblings = load_blueprints([blueprint_dir or str(Path(blueprint_file).parent)])

    def show(event: str, data: dict[str, Any]) -> None:
        click.echo(f"{event} {json.dumps(data)}", err=True)

    runner = LocalRunner(default_registry, siblings, on_event=show if events else None)
    try:
        result = runner.run(blueprint, context or {})
    except ValueError as exc:  # invalid blueprint, id or values
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    sys.exit(1 if result.status == "failed" else 0)


@main.command("conformance")
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
        raise click.ClickException(str(exc)) from exc
    with contextlib.ExitStack() as stack:
        executor: Mode = LocalMode()
        if mode == "celery":
            executor = stack.enter_context(_celery_mode(scenarios_file, workers, external_workers))
        reports = []
        for report in run_scenarios(scenarios, executor, only):
            click.echo(report.line())
            reports.append(report)
    click.echo(summary(reports))
    sys.exit(0 if all(r.passed for r in reports) else 1)


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


def _client() -> Any:
    from flowcraft_celery.distributed.client import Client

    return Client()


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


@main.command("start")
@click.argument("blueprint_id")
@click.option("--context", "context", callback=_json_option, default=None, metavar="JSON",
              help="Initial context as a JSON object.")
@click.option("--wait", "wait", is_flag=True, help="Show progress and wait until the run ends or awaits.")
@click.option("--timeout", default=None, type=float, help="With --wait: give up after this many seconds.")
@click.option("--all-keys", is_flag=True, help="With --wait: print the internal `_outputs.*` keys of the context too.")
@click.option("--run-id", "run_id", default=None,
              help="Your own run id; starting the same id again starts nothing new and prints it again.")
def start_command(blueprint_id: str, context: Any, wait: bool, timeout: float | None, all_keys: bool,
                  run_id: str | None) -> None:
    """Start a run of BLUEPRINT_ID on the Celery workers; print its run id (or its result with --wait).

    All or nothing: when a service cannot be reached, it fails naming the endpoint and the run
    never executes.
    """
    from flowcraft_celery.distributed.runs import RunError

    if context is not None and not isinstance(context, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--context")
    client = _client()
    try:
        run = client.start(blueprint_id, context or {}, run_id)
    except (RunError, ValueError) as exc:  # invalid blueprint, id or values
        raise click.ClickException(str(exc)) from exc
    if not wait:
        click.echo(run.run_id)
        return
    click.echo(f"run {run.run_id}", err=True)
    try:
        doc = run.wait(timeout, on_poll=progress_printer(client.runtime, run.run_id))
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("", err=True)
    result = client.result(run.run_id)
    _echo_json(result if all_keys else {**result, "context": user_context(result.get("context"))})
    sys.exit(1 if doc.get("status") == "failed" else 0)


@main.command("status")
@click.argument("run_id")
def status_command(run_id: str) -> None:
    """Print a run's status document as JSON."""
    from flowcraft_celery.distributed.runs import RunError

    try:
        _echo_json(_client().status(run_id))
    except RunError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command("resume")
@click.argument("run_id")
@click.argument("action", required=False)
@click.option("--output", "output", callback=_json_option, default=None, metavar="JSON",
              help="The waiting node's output, as JSON.")
@click.option("--node", "node_id", default=None, help="Which waiting node (default: the first).")
def resume_command(run_id: str, action: str | None, output: Any, node_id: str | None) -> None:
    """Continue an awaiting run: the waiting node gets OUTPUT and ACTION as its result."""
    from flowcraft_celery.distributed.runs import RunError

    try:
        resumed = _client().resume(run_id, action, output, node_id)
    except RunError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"resumed {printable(run_id)} at {printable(resumed)}")


@main.command("cancel")
@click.argument("run_id")
def cancel_command(run_id: str) -> None:
    """Cancel a run; nothing of it starts afterwards."""
    from flowcraft_celery.distributed.runs import RunError

    try:
        cancelled = _client().cancel(run_id)
    except RunError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"cancelled {printable(run_id)}" if cancelled else f"{printable(run_id)} had already ended")


@main.command("runs")
@click.option("--status", "status", default=None,
              type=click.Choice(["running", "awaiting", "completed", "failed", "cancelled", "stalled"]))
@click.option("--limit", default=20, show_default=True)
def runs_command(status: str | None, limit: int) -> None:
    """List the newest runs: id, status, blueprint, last update."""
    for doc in _client().list_runs(status, limit):
        updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(doc.get("lastUpdated", 0))))
        click.echo(f"{printable(str(doc.get('runId')))}  {doc.get('status'):<9}  "
                   f"{printable(str(doc.get('blueprintId')))}  {updated}")


@main.command("reconcile")
@click.option("--stall-seconds", default=None, type=float, help="Idle time after which a running run is stalled.")
def reconcile_command(stall_seconds: float | None) -> None:
    """Re-publish the outstanding work of stalled runs now (what beat schedules); print the counts."""
    from flowcraft_celery.distributed.reconcile import reconcile

    client = _client()
    _echo_json(reconcile(client.app, client.runtime, stall_seconds).to_dict())


@main.command("demo")
def demo_command() -> None:
    """Run the example order workflow on 2 real Celery workers and beat over the dev services."""
    from flowcraft_celery.devtools.demo import run_demo

    sys.exit(run_demo(click.echo))
