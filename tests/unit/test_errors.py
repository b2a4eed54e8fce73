"""Every error the project raises on purpose derives from one base (the transport's from its own), keeps
its builtin base, and reaches a command's user as one line."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator

import pytest

import flowcraft_celery
import transports
from flowcraft_celery.cli.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_INTERNAL, EXIT_UNREACHABLE, as_command_error
from flowcraft_celery.distributed.runs.errors import RunError
from flowcraft_celery.errors import FlowcraftError
from flowcraft_celery.stores.faults import InfrastructureError
from transports.azurequeue.errors import AzureQueueError
from transports.azurequeue.redisauth import RedisCredentialError
from transports.azurequeue.wire import PoisonMessage


def exception_classes(package: object) -> Iterator[type[BaseException]]:
    """Every exception class defined in a module of the package (entry points such as `__main__` are not run)."""
    for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):  # type: ignore[attr-defined]
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == module.__name__:
                yield cls


def test_every_project_exception_derives_from_flowcraft_error() -> None:
    found = list(exception_classes(flowcraft_celery))
    assert len(found) > 25  # the walk sees the package's exceptions
    assert [cls.__qualname__ for cls in found if not issubclass(cls, FlowcraftError)] == []


def test_every_transport_exception_derives_from_its_own_base() -> None:
    found = list(exception_classes(transports))
    assert PoisonMessage in found
    assert [cls.__qualname__ for cls in found if not issubclass(cls, AzureQueueError)] == []
    assert not any(issubclass(cls, FlowcraftError) for cls in found)  # the transport stands alone


def test_builtin_bases_are_kept() -> None:
    assert issubclass(RunError, RuntimeError) and issubclass(PoisonMessage, ValueError)


@pytest.mark.parametrize(("error", "code", "line"), [
    (RunError("no run 'r1'\nmore"), EXIT_FAILED, "no run 'r1'"),
    (PoisonMessage("not a Kombu message"), EXIT_FAILED, "not a Kombu message"),
    (InfrastructureError("Redis at redis://h:1/0 is unreachable"), EXIT_UNREACHABLE,
     "Redis at redis://h:1/0 is unreachable"),
    (RedisCredentialError("FLOWCRAFT_REDIS_CREDENTIAL 'x' is neither DefaultAzureCredential nor module:attribute"),
     EXIT_CONFIG, "FLOWCRAFT_REDIS_CREDENTIAL 'x' is neither DefaultAzureCredential nor module:attribute"),
    (KeyError("x"), EXIT_INTERNAL, "unexpected KeyError: 'x' (rerun with --debug for the traceback)"),
])
def test_the_cli_shows_an_error_as_one_line(error: Exception, code: int, line: str) -> None:
    shown = as_command_error(error)
    assert (shown.exit_code, shown.message) == (code, line)
