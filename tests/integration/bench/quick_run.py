"""Run a benchmark script's `--quick` mode as a user would, stopping it cleanly if it hangs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def run_quick(script: str, env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run `bench/SCRIPT --quick`; on a hang, interrupt it (SIGINT) so it stops its own workers, then kill."""
    proc = subprocess.Popen([sys.executable, "-W", "ignore", str(ROOT / "bench" / script), "--quick"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    return proc.returncode, out.decode(errors="replace")
