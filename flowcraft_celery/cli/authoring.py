"""`validate` and `run --local`: check and try a blueprint on this machine, without any service.

A blueprint is a JSON file or a `module:attr` naming a Flow/Blueprint (or a list of them).
Subflows are looked up by id, lazily (see `model/catalog.py`), so only the blueprints a flow
references are read; a file that cannot be read is one line naming it and its fault.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from flowcraft_celery.cli.errors import EXIT_FAILED, EXIT_USAGE, CommandError
from flowcraft_celery.cli.options import blueprint_sources, blueprints_option, context_option, registry_option
from flowcraft_celery.model.blueprint import Blueprint
from flowcraft_celery.model.catalog import Catalog, CatalogError, is_object_reference, load_object, read_blueprint_file
from flowcraft_celery.model.printable import printable


def _importable_cwd() -> None:
    """Modules of the working directory import like with `python -m` (node modules, module:attr)."""
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))


def read_blueprints(source: str, blueprint_id: str | None, exit_code: int) -> tuple[list[Blueprint], str | None]:
    """The blueprints SOURCE names (a file, or module:attr) and the folder beside a file."""
    _importable_cwd()
    try:
        if Path(source).is_file():
            return [read_blueprint_file(source, blueprint_id)], str(Path(source).parent)
        if is_object_reference(source):
            found = load_object(source)
            if blueprint_id is not None:
                found = [b for b in found if b.id == blueprint_id]
                if not found:
                    raise CatalogError(f"{source}: defines no blueprint {blueprint_id!r}")
            return found, None
    except CatalogError as exc:
        raise CommandError(str(exc), exit_code) from None
    raise CommandError(f"{source}: no such file (give a blueprint .json file or module:attr)", EXIT_USAGE)


def import_registry(modules: tuple[str, ...]) -> None:
    """Import node modules named on the command line, naming the one that fails."""
    from flowcraft_celery.engine.registry import import_modules

    _importable_cwd()
    for module in modules:
        try:
            import_modules([module])
        except ImportError as exc:
            raise CommandError(f"--registry {module}: cannot import it ({exc})", EXIT_USAGE) from None


@click.command("validate")
@click.argument("source", metavar="BLUEPRINT")
@registry_option
@blueprints_option
@click.option("--id", "blueprint_id", default=None,
              help="Blueprint id: for a file without one (default: file name), or which one of module:attr.")
@click.option("--json", "as_json", is_flag=True, help="Print the issues as JSON.")
def validate_command(source: str, registry_modules: tuple[str, ...], blueprint_dirs: tuple[str, ...],
                     blueprint_id: str | None, as_json: bool) -> None:
    """Report every problem of BLUEPRINT (a .json file or module:attr) at once; exit 1 if any is an error.

    With --registry, `uses` values no module defines are reported too.
    """
    from flowcraft_celery.engine.registry import default_registry
    from flowcraft_celery.model.validation import validate

    blueprints, beside = read_blueprints(source, blueprint_id, EXIT_FAILED)
    import_registry(registry_modules)
    siblings = Catalog(blueprint_sources(blueprint_dirs, beside), blueprints)
    report: list[dict[str, Any]] = []
    failed = False
    for blueprint in blueprints:
        try:
            issues = validate(blueprint, default_registry if registry_modules else None, siblings)
        except CatalogError as exc:
            raise CommandError(str(exc), EXIT_FAILED) from None
        errors = [i for i in issues if i.severity == "error"]
        failed = failed or bool(errors)
        if as_json:
            report += [i.to_dict() for i in issues]
            continue
        for issue in issues:
            click.echo(printable(f"{issue.severity.upper()} {issue}", limit=2000))
        click.echo(f"{printable(blueprint.id)}: {len(errors)} error(s), {len(issues) - len(errors)} warning(s)")
    if as_json:
        click.echo(json.dumps(report, indent=2))
    sys.exit(EXIT_FAILED if failed else 0)


@click.command("run")
@click.argument("source", metavar="BLUEPRINT")
@click.option("--local", "local", is_flag=True, required=True,
              help="Run in this process with in-memory state (use `start` for Celery workers).")
@context_option
@registry_option
@blueprints_option
@click.option("--id", "blueprint_id", default=None, help="Which blueprint of a module:attr naming several.")
@click.option("--events", is_flag=True, help="Print each event to stderr as it happens.")
def run_command(source: str, local: bool, context: dict[str, Any], registry_modules: tuple[str, ...],
                blueprint_dirs: tuple[str, ...], blueprint_id: str | None, events: bool) -> None:
    """Run BLUEPRINT (a .json file or module:attr) to its end; print {status, context, errors} as JSON.

    Exit status: 0 completed or awaiting, 1 failed, 2 invalid blueprint or arguments.
    """
    from flowcraft_celery.engine.registry import default_registry
    from flowcraft_celery.local.runner import LocalRunner
    import_registry(registry_modules)
    blueprints, beside = read_blueprints(source, blueprint_id, EXIT_USAGE)
    if len(blueprints) != 1:
        names = ", ".join(b.id for b in blueprints) or "none"
        raise CommandError(f"{source} defines {len(blueprints)} blueprints ({names}); choose one with --id", EXIT_USAGE)
    siblings = Catalog(blueprint_sources(blueprint_dirs, beside), blueprints)

    def show(event: str, data: dict[str, Any]) -> None:
        click.echo(f"{event} {json.dumps(data, default=str)}", err=True)

    runner = LocalRunner(default_registry, siblings, on_event=show if events else None)
    try:
        result = runner.run(blueprints[0], context)
    except ValueError as exc:  # an invalid blueprint, id or value, or an unreadable subflow file
        raise CommandError(str(exc), EXIT_USAGE) from None
    click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    sys.exit(EXIT_FAILED if result.status == "failed" else 0)
