"""Integration fixtures: real dev services for the session, unique names per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flowcraft_celery.devtools import devservices
from tests.integration import names
from tests.integration.celery_settings import environ_applied
from tests.integration.leftovers import remove_leftovers

_HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration `integration` (before `-m` selects)."""
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def services_env() -> Iterator[dict[str, str]]:
    """Bring the dev services up for the session, export their env vars; at the end remove the
    queues and databases the session's tests named (`names.MADE`) and stop what it started."""
    ports = devservices.Ports.from_env()
    env = devservices.up(ports)
    try:
        with environ_applied(env):
            yield env
    finally:
        remove_leftovers(env, names.MADE)
        devservices.down(ports, only_started_here=True)


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """The `unique_name(prefix)` helper: `<prefix>-<8 hex>`, a valid Azure queue name."""
    return names.unique_name


@pytest.fixture
def unique_prefix(request: pytest.FixtureRequest) -> str:
    """A name prefix unique to this test run: the test's name plus 8 hex digits."""
    return names.unique_name(request.node.name[:40])
