"""Starting and stopping real `celery worker` / `celery beat` processes (demo, conformance, tests).

Each process gets its own log file and is stopped by PID (TERM, then KILL) — also when the
caller fails — through the `WorkerGroup` context manager.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Collection, Mapping
from pathlib import Path
from types import TracebackType


class WorkerGroup:
    """A set of Celery processes sharing one environment; use as a context manager."""

    def __init__(self, env: Mapping[str, str], log_dir: str | Path, cwd: str | Path | None = None) -> None:
        self.env = {**os.environ, **env}
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.cwd = str(cwd or Path.cwd())
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self._worker_pids: set[int] = set()

    def _spawn(self, name: str, args: list[str], without: Collection[str] = ()) -> subprocess.Popen[bytes]:
        return self.program(name, "-m", "celery", "-A", "flowcraft_celery", *args, without=without)

    def program(self, name: str, *args: str, without: Collection[str] = ()) -> subprocess.Popen[bytes]:
        """Start `python ARGS...` in the group's environment, less the variables named in `without`
        (log `<name>.log`, stopped with the group)."""
        log = self.log_dir / f"{name}.log"
        handle = log.open("wb")
        env = {k: v for k, v in self.env.items() if k not in without}
        process = subprocess.Popen([sys.executable, *args],
                                   env=env, cwd=self.cwd, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        handle.close()
        self.processes.append(process)
        self.logs.append(log)
        return process

    def worker(self, queues: str | None = None, concurrency: int = 2, name: str | None = None,
               pool: str = "prefork") -> subprocess.Popen[bytes]:
        """Start one worker process (its pool has `concurrency` children)."""
        node = name or f"w{len(self.processes)}-{uuid.uuid4().hex[:6]}"
        args = ["worker", "-l", "INFO", "-n", f"{node}@%h", "-c", str(concurrency), "-P", pool,
                "--without-gossip", "--without-mingle"]
        if queues:
            args += ["-Q", queues]
        process = self._spawn(node, args)
        self._worker_pids.add(process.pid)
        return process

    def beat(self) -> subprocess.Popen[bytes]:
        """Start `celery beat` (schedule file in the log folder)."""
        schedule = self.log_dir / f"beat-{uuid.uuid4().hex[:6]}"
        return self._spawn("beat", ["beat", "-l", "INFO", "-s", str(schedule)])

    def flower(self, port: int, *options: str, without: Collection[str] = ()) -> subprocess.Popen[bytes]:
        """Start Flower on 127.0.0.1:`port` at its defaults (1 s inspect timeout), with more Flower
        `options` (`--tasks_columns=...`), without the environment variables named in `without`."""
        return self._spawn("flower", ["flower", "--address=127.0.0.1", f"--port={port}", *options], without)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until every worker logged `ready` (RuntimeError with the log tail otherwise)."""
        deadline = time.monotonic() + timeout
        for process, log in zip(self.processes, self.logs, strict=True):
            if process.pid not in self._worker_pids:
                continue
            while b"ready." not in log.read_bytes():
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"worker {log.stem} did not start (log {log}):\n{tail}")
                time.sleep(0.2)

    def kill(self, process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Send `sig` to a process and its children (its session)."""
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        process.wait(timeout=30)

    def stop(self) -> None:
        """TERM each main process (a warm shutdown: running tasks finish), then KILL each
        process group still alive after 15 s."""
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                self.kill(process)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

    def __enter__(self) -> WorkerGroup:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
