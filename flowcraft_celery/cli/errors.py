"""How the command fails: one line on stderr naming what to fix, a documented exit code, and the
full traceback only with `--debug` (or FLOWCRAFT_DEBUG=1).

Every command registered on `CommandGroup` gets a `--debug` option; any exception a command
lets escape is turned into a `CommandError` here, so no command needs its own try/except for
configuration or connection problems.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import click

from flowcraft_celery.errors import FlowcraftError
from flowcraft_celery.model.printable import printable

EXIT_OK = 0
#: What was checked failed: the blueprint has errors, the run failed, the run, blueprint or queue is unknown.
EXIT_FAILED = 1
#: Bad command line: unknown option, malformed --context, a blueprint that cannot run (click's own code).
EXIT_USAGE = 2
#: A setting (or a file or module it names) is missing or wrong.
EXIT_CONFIG = 3
#: A service (Azure Storage, Cosmos DB, Redis) cannot be reached or refused the credentials.
EXIT_UNREACHABLE = 4
#: `--wait` gave up before the run ended.
EXIT_TIMEOUT = 5
#: A bug: an unexpected exception (the message says to rerun with --debug).
EXIT_INTERNAL = 70

#: Longest error message printed (a value it names is cut well before).
MESSAGE_LIMIT = 2000

EXIT_CODES_HELP = (
    f"Exit codes: {EXIT_OK} success; {EXIT_FAILED} what was checked failed (blueprint errors, failed run, "
    f"unknown run or queue); {EXIT_USAGE} bad command line or a blueprint that cannot run; {EXIT_CONFIG} a "
    f"setting is missing or wrong; {EXIT_UNREACHABLE} a service cannot be reached; {EXIT_TIMEOUT} --wait timed out; "
    f"{EXIT_INTERNAL} unexpected error (rerun with --debug for the traceback)."
)


class CommandError(FlowcraftError, click.ClickException):
    """A failure shown as `Error: <message>` (made one printable line) with its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(one_line(message))
        self.code = exit_code

    @property
    def exit_code(self) -> int:
        """The process exit status click uses for this error."""
        return self.code

    @exit_code.setter
    def exit_code(self, value: int) -> None:
        self.code = value


def one_line(message: str) -> str:
    """An error message as one printable line: its own lines joined, control characters escaped
    and long values cut (`printable`)."""
    return printable(" ".join(part.strip() for part in message.splitlines() if part.strip()), MESSAGE_LIMIT)


def _debugging() -> bool:
    ctx = click.get_current_context(silent=True)
    meta_debug = bool(ctx and ctx.find_root().meta.get("flowcraft.debug"))
    return meta_debug or os.environ.get("FLOWCRAFT_DEBUG", "").lower() in ("1", "true", "yes")


def _set_debug(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_root().meta["flowcraft.debug"] = True


def debug_option() -> click.Option:
    """`--debug`: show the full traceback of an error instead of its one-line explanation."""
    return click.Option(["--debug"], is_flag=True, expose_value=False, is_eager=True, callback=_set_debug,
                        help="On error, show the full traceback (also FLOWCRAFT_DEBUG=1).")


def _settings() -> Mapping[str, Any]:
    """The configuration to name endpoints with: the app's, when it is loaded, else the environment's."""
    app_module = sys.modules.get("flowcraft_celery.distributed.app")
    if app_module is not None:
        return app_module.app.conf
    from flowcraft_celery.settings import DEFAULT_REDIS_URL

    return {"flowcraft_redis_url": os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL}


def as_command_error(exc: Exception) -> CommandError:
    """The one-line form of an exception a command let escape: a configuration or connection problem
    names the setting or endpoint; any other error of flowcraft-celery or its transport is its own first
    line; anything else is a bug."""
    from flowcraft_celery.distributed.core.problems import ServiceUnreachable, explain
    from flowcraft_celery.model.catalog import CatalogError
    from flowcraft_celery.stores.faults import InfrastructureError
    from transports.azurequeue import AzureQueueError, RedisCredentialError

    problem = explain(exc, _settings(), os.environ)
    if isinstance(problem, ServiceUnreachable):
        return CommandError(str(problem), EXIT_UNREACHABLE)
    if problem is not None:
        return CommandError(str(problem), EXIT_CONFIG)
    if isinstance(exc, (CatalogError, RedisCredentialError)):  # a setting that cannot work as written
        return CommandError(one_line(str(exc)), EXIT_CONFIG)
    if isinstance(exc, RecursionError):
        return CommandError("input nested too deeply (RecursionError)", EXIT_USAGE)
    first = printable(str(exc).splitlines()[0], 300) if str(exc) else ""
    if isinstance(exc, (FlowcraftError, AzureQueueError)) and first:
        return CommandError(first, EXIT_UNREACHABLE if isinstance(exc, InfrastructureError) else EXIT_FAILED)
    return CommandError(f"unexpected {type(exc).__name__}: {first} (rerun with --debug for the traceback)",
                        EXIT_INTERNAL)


class CommandGroup(click.Group):
    """A click group whose commands fail in one line (see the module docstring)."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        """Register a command, giving it (and its subcommands) the `--debug` option."""
        _add_debug(cmd)
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; translate what escapes it unless debugging."""
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:  # a group without its subcommand: its help
            raise
        except click.UsageError as exc:  # without click's usage lines: one line, saying where help is
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            raise CommandError(exc.format_message() + where, exc.exit_code) from exc
        except CommandError:
            raise
        except click.ClickException as exc:
            setattr(exc, "message", one_line(exc.message))  # noqa: B010 (click types it Final; a plain attribute)
            raise
        except (click.exceptions.Exit, click.Abort, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            if _debugging():
                raise
            raise as_command_error(exc) from exc


def _add_debug(cmd: click.Command) -> None:
    if not any(p.name == "debug" for p in cmd.params):
        cmd.params.append(debug_option())
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            _add_debug(sub)
