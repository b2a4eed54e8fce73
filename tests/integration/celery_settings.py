"""Settings of one test module applied to this process: env vars set, `celeryconfig` re-read, undone after."""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def celery_app_for(env: dict[str, str]) -> Iterator[Any]:
    """Set `env` in os.environ, re-read `celeryconfig` and yield a new app; restore both on exit."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    import celeryconfig
    from flowcraft_celery.distributed.app import create_app

    importlib.reload(celeryconfig)
    try:
        yield create_app()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        importlib.reload(celeryconfig)
