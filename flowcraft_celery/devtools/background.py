"""Background processes tracked by PID files: start detached with a log, find again, stop by PID.

A process is known by a key: `<directory>/<key>.pid` holds its PID and `<directory>/<key>.log`
its output. It runs in its own session (so it outlives the starter and a stop reaches its
whole process group). A PID is only trusted while its command line still names the program,
so a stale file whose PID was reused by an unrelated process never gets that process killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

#: Processes started by this Python process, kept so stopping them also reaps them.
_children: dict[int, subprocess.Popen[bytes]] = {}


def pid_path(directory: Path, key: str) -> Path:
    """The PID file of `key`."""
    return directory / f"{key}.pid"


def log_path(directory: Path, key: str) -> Path:
    """The log file of `key`."""
    return directory / f"{key}.log"


def log_tail(log: Path, lines: int = 15) -> str:
    """The last lines of a log, indented, for error messages (empty when unreadable)."""
    try:
        text = log.read_text(errors="replace").rstrip().splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join(f"    {line}" for line in text)


def start(directory: Path, key: str, argv: Sequence[str]) -> int:
    """Start `argv` detached, output to the key's log, PID to its PID file; return the PID."""
    directory.mkdir(parents=True, exist_ok=True)
    with log_path(directory, key).open("wb") as log:
        child = subprocess.Popen(
            list(argv),
            cwd=directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _children[child.pid] = child
    pid_path(directory, key).write_text(f"{child.pid}\n")
    return child.pid


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z"):
            return False
    return True


def exit_code(pid: int) -> int | None:
    """The exit code of a process this Python process started and that has exited."""
    child = _children.get(pid)
    return None if child is None else child.poll()


def running_pid(directory: Path, key: str, program: str) -> int | None:
    """The PID of the live process recorded under `key` and running `program`, else None.

    A PID file that does not match a live `program` process is stale and is removed.
    """
    path = pid_path(directory, key)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    if alive(pid) and (pid in _children or program in _cmdline(pid)):
        return pid
    path.unlink(missing_ok=True)
    return None


def _cmdline(pid: int) -> str:
    """The process's command line as one string (read again while a fresh exec leaves it empty)."""
    try:
        for _ in range(50):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if cmdline:
                return cmdline.replace(b"\0", b" ").decode(errors="replace")
            time.sleep(0.01)
        return ""
    except OSError:
        result = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False)
        return result.stdout


def stop(directory: Path, key: str, program: str, grace: float = 10.0) -> int | None:
    """Stop the process recorded under `key` (TERM, KILL after `grace` s); return its PID."""
    pid = running_pid(directory, key, program)
    if pid is not None:
        _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            _signal(pid, signal.SIGKILL)
            while alive(pid):
                time.sleep(0.05)
        _children.pop(pid, None)
    pid_path(directory, key).unlink(missing_ok=True)
    return pid


def _signal(pid: int, sig: signal.Signals) -> None:
    """Signal the process group `start` created for `pid` (the process alone if it has none)."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
