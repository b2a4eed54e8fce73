"""Background processes by PID file: started detached, found again, stopped, never a stranger."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowcraft_celery.devtools import background


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A process this test owns that is not the program a PID file claims."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_start_records_a_pid_that_stop_ends(tmp_path: Path) -> None:
    pid = background.start(tmp_path, "sleeper", ["sleep", "60"])
    try:
        assert background.pid_path(tmp_path, "sleeper").read_text().strip() == str(pid)
        assert background.running_pid(tmp_path, "sleeper", "sleep") == pid
        assert background.stop(tmp_path, "sleeper", "sleep") == pid
        assert not background.alive(pid)
        assert not background.pid_path(tmp_path, "sleeper").exists()
    finally:
        background.stop(tmp_path, "sleeper", "sleep")


def test_output_goes_to_the_log(tmp_path: Path) -> None:
    pid = background.start(tmp_path, "echo", ["sh", "-c", "echo started-ok"])
    while background.alive(pid):
        time.sleep(0.01)
    assert background.exit_code(pid) == 0
    assert background.log_path(tmp_path, "echo").read_text() == "started-ok\n"
    assert "started-ok" in background.log_tail(background.log_path(tmp_path, "echo"))


def test_a_reused_pid_is_not_trusted_nor_killed(tmp_path: Path, stranger: subprocess.Popen[bytes]) -> None:
    background.pid_path(tmp_path, "redis-1").write_text(f"{stranger.pid}\n")
    assert background.running_pid(tmp_path, "redis-1", "redis-server") is None
    assert not background.pid_path(tmp_path, "redis-1").exists()
    assert background.stop(tmp_path, "redis-1", "redis-server") is None
    assert stranger.poll() is None


def test_a_pid_file_from_another_process_is_recognised_by_its_program(
    tmp_path: Path, stranger: subprocess.Popen[bytes]
) -> None:
    background.pid_path(tmp_path, "sleeper").write_text(f"{stranger.pid}\n")
    assert background.running_pid(tmp_path, "sleeper", "sleep") == stranger.pid
    assert background.stop(tmp_path, "sleeper", "sleep") == stranger.pid
    assert stranger.wait() != 0


def test_stopping_what_was_never_started_is_a_no_op(tmp_path: Path) -> None:
    assert background.stop(tmp_path, "nothing", "sleep") is None
