"""Options and arguments shared by several commands."""

from __future__ import annotations

import json
import os
from typing import Any

import click


def _json_text(value: str, param: click.Parameter) -> tuple[str, str]:
    """The JSON text of an option value and how to name it: the value itself, or with `@PATH` the
    file's content (BadParameter naming the file when it cannot be read)."""
    if not value.startswith("@"):
        return value, "not valid JSON"
    path = value[1:]
    try:
        with open(path, encoding="utf-8") as file:
            return file.read(), f"file {path!r} is not valid JSON"
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise click.BadParameter(f"cannot read file {path!r}: {reason}", param=param) from None


def parse_json(_: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Parse a JSON option value (or `@PATH`: the JSON in that file), naming the option on error."""
    if value is None:
        return None
    from flowcraft_celery.model.json_values import NotJsonError, check_json

    text, not_json = _json_text(value, param)
    try:
        parsed = json.loads(text)
        check_json(parsed, "the value")
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{not_json}: {exc}", param=param) from exc
    except RecursionError:
        raise click.BadParameter("JSON nested too deeply", param=param) from None
    except NotJsonError as exc:
        raise click.BadParameter(str(exc), param=param) from exc
    return parsed


def parse_context(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, Any]:
    """`--context`: a JSON object (absent: empty)."""
    parsed = parse_json(ctx, param, value)
    if parsed is None:
        return {}
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object", param=param)
    return parsed


context_option = click.option("--context", "context", callback=parse_context, default=None, metavar="JSON|@FILE",
                              help="Initial context as a JSON object, or @FILE to read it from a file.")
json_output_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines instead of text.")


def blueprint_sources(given: tuple[str, ...], beside: str | None) -> list[str]:
    """Where subflows are looked up: `--blueprints` if given, else FLOWCRAFT_BLUEPRINTS and the
    blueprint file's folder."""
    if given:
        return list(given)
    configured = [s.strip() for s in os.environ.get("FLOWCRAFT_BLUEPRINTS", "").split(",") if s.strip()]
    return [*configured, *([beside] if beside else [])]


blueprints_option = click.option(
    "--blueprints", "blueprint_dirs", multiple=True, metavar="SOURCE",
    help="Where subflows are found: a folder (subflow `x` is x.json), a file, or module:attr; repeatable "
         "(default: FLOWCRAFT_BLUEPRINTS and the blueprint file's folder).")
registry_option = click.option("--registry", "registry_modules", multiple=True, metavar="MODULE",
                               help="Module defining nodes (repeatable).")
