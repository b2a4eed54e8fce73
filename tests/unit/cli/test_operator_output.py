"""Output helpers of the operator commands: tables, durations, the user's context."""

from __future__ import annotations

from flowcraft_celery.cli.progress import user_context
from flowcraft_celery.cli.tables import render_table, seconds


def test_columns_are_as_wide_as_their_widest_cell() -> None:
    assert render_table(("A", "LONGER"), [("xyz", "1"), ("", "22")]) == ["A    LONGER", "xyz  1", "     22"]


def test_durations_read_naturally() -> None:
    assert [seconds(v) for v in (None, 0.0123, 4.25, 185)] == ["", "12 ms", "4.2 s", "3 min 05 s"]


def test_the_user_context_has_no_internal_output_keys_but_keeps_node_ids() -> None:
    context = {"order": {"id": 1}, "_outputs.ship": {"ok": True}, "ship": {"ok": True}}
    assert user_context(context) == {"order": {"id": 1}, "ship": {"ok": True}}
