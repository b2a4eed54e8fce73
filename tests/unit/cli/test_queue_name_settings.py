"""Azure's queue naming rules: which queue prefixes and names are problems (the commands and the
worker refusing them run as processes in tests/integration/cli/test_queue_name_settings_cli.py)."""

from __future__ import annotations

import pytest

from transports.azurequeue.naming import azure_queue_name, listing_prefix, prefix_problem, queue_problem


@pytest.mark.parametrize("prefix", ["prd-", "prd", "a1-b2-", ""])
def test_valid_prefixes_keep_the_queue_names_the_listing_looks_for(prefix: str) -> None:
    assert prefix_problem(prefix) is None
    assert azure_queue_name("flowcraft", prefix).startswith(listing_prefix(prefix))
    assert azure_queue_name("flowcraft", prefix) == f"{prefix}flowcraft"


@pytest.mark.parametrize("prefix", ["H2_Bad", "-x", "a--b", "a_", "x" * 60])
def test_prefixes_azure_would_not_keep_are_problems(prefix: str) -> None:
    assert prefix_problem(prefix) is not None


def test_queue_names_azure_would_not_keep_are_problems() -> None:
    assert queue_problem("flowcraft") is None and queue_problem("tasks", "prd-") is None
    assert queue_problem("My_Q") and queue_problem("q-") and queue_problem("ab") and queue_problem("a--b")
