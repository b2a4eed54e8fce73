"""Queue settings outside Azure's naming rules are refused in one line by every command and the worker,
instead of being mapped to a queue name no listing finds (each a process of its own: no service needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def run(argv: list[str], **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWCRAFT_", "CELERY_"))}
    return subprocess.run([sys.executable, *argv], env={**env, **settings}, cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize(("setting", "value", "command"), [
    ("FLOWCRAFT_QUEUE_PREFIX", "H2_Bad", ["queues"]), ("FLOWCRAFT_QUEUE_PREFIX", "H2_Bad", ["runs"]),
    ("FLOWCRAFT_QUEUE_PREFIX", "H2_Bad", ["dlq", "show", "flowcraft"]),
    ("FLOWCRAFT_DEFAULT_QUEUE", "Orders_Q", ["start", "bp"]), ("FLOWCRAFT_RECONCILE_QUEUE", "recon--q", ["reconcile"])])
def test_commands_refuse_a_queue_setting_outside_azures_rules_in_one_line(setting: str, value: str,
                                                                         command: list[str]) -> None:
    done = run(["-m", "flowcraft_celery.cli", *command], **{setting: value})
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 3, (command, done.stderr)
    assert len(lines) == 1 and setting in lines[0] and repr(value) in lines[0], lines
    assert "lowercase letters, digits and single hyphens" in lines[0]


def test_a_worker_refuses_to_start_with_a_bad_queue_prefix() -> None:
    done = run(["-m", "celery", "-A", "flowcraft_celery", "worker", "-c", "1"], FLOWCRAFT_QUEUE_PREFIX="H2_Bad")
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "flowcraft: cannot start" in line]
    assert done.returncode == 3 and len(lines) == 1
    assert "FLOWCRAFT_QUEUE_PREFIX: 'H2_Bad'" in lines[0] and "e.g. 'h2-bad-'" in lines[0]
