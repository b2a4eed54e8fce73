"""Settings of one test module applied to this process: env vars set, `celeryconfig` re-read, undone after."""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator, Mapping
from typing import Any


@contextlib.contextmanager
def environ_applied(env: Mapping[str, str]) -> Iterator[None]:
    """Set `env` in os.environ; restore every variable it names (or remove it) on exit."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def settings_applied(env: Mapping[str, str]) -> Iterator[None]:
    """`environ_applied`, with `celeryconfig` re-read on entry and again after the restore."""
    import celeryconfig

    try:
        with environ_applied(env):
            importlib.reload(celeryconfig)
            yield
    finally:
        importlib.reload(celeryconfig)


@contextlib.contextmanager
def celery_app_for(env: Mapping[str, str]) -> Iterator[Any]:
    """`settings_applied`, yielding a new app configured by them."""
    from flowcraft_celery.distributed.app import create_app

    with settings_applied(env):
        yield create_app()
