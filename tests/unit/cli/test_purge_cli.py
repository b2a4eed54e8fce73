"""`flowcraft-celery purge` refuses a bad `--older-than` before touching any store."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from flowcraft_celery.cli.main import main


@pytest.mark.parametrize("value", ["7", "3x", "-1d", "d", ""])
def test_purge_names_the_bad_duration_and_the_forms_it_accepts(value: str) -> None:
    result = CliRunner().invoke(main, ["purge", "--older-than", value])
    assert result.exit_code == 2
    assert "--older-than" in result.output and repr(value) in result.output
    assert "'7d'" in result.output
