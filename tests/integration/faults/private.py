"""Private Azurite, Cosmos emulator and Redis for fault tests: own free ports, own PIDs, own logs.

Fault tests kill, pause and restart services; the shared dev services on the default ports must
never be touched, so each fault module starts its own set (`PrivateServices`), breaks only that
set, and stops every process it started by PID, also when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

from flowcraft_celery.devtools import background, devservices

ROOT = Path(__file__).resolve().parents[3]
#: Seconds a private service may take to answer after it starts.
START_TIMEOUT = 90.0


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports nothing listens on right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((devservices.HOST, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


class PrivateServices:
    """One private set of the three services; use as a context manager."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        blob, queue, table, cosmos, redis = free_ports(5)
        self.ports = devservices.Ports(blob=blob, queue=queue, table=table, cosmos=cosmos, redis=redis)
        launches = devservices.launches(self.ports, ROOT)
        redis_argv = ("redis-server", "--port", str(redis), "--bind", devservices.HOST, "--save", "",
                      "--appendonly", "no", "--daemonize", "no")  # no persistence: a restart loses everything
        self._launches = {
            "azurite": launches[0],
            "cosmos": next(la for la in launches if la.key.startswith("cosmosdb-server")),
            "redis": devservices.Launch(f"redis-{redis}", (devservices.endpoints(self.ports)[-1],), redis_argv),
        }
        self._pids: dict[str, int] = {}

    def env(self) -> dict[str, str]:
        """The environment variables that point the app at this set."""
        return devservices.env_vars(self.ports)

    def start(self, *names: str) -> None:
        """Start the named services (default: all three) and wait until each answers."""
        for name in names or tuple(self._launches):
            launch = self._launches[name]
            self._pids[name] = background.start(self.folder, launch.key, launch.argv)
        deadline = time.monotonic() + START_TIMEOUT
        for name in names or tuple(self._launches):
            launch = self._launches[name]
            while not all(e.probe(e.host, e.port) for e in launch.endpoints):
                if not background.alive(self._pids[name]) or time.monotonic() > deadline:
                    log = background.log_path(self.folder, launch.key)
                    raise RuntimeError(f"private {name} did not answer; log {log}:\n{background.log_tail(log)}")
                time.sleep(0.2)

    def stop(self, *names: str) -> None:
        """Stop the named services (default: all) by PID: TERM, then KILL."""
        for name in names or tuple(self._launches):
            launch = self._launches[name]
            self.resume(name)
            background.stop(self.folder, launch.key, launch.program, grace=5.0)
            self._pids.pop(name, None)

    def kill(self, name: str) -> None:
        """Kill a service at once (SIGKILL): whatever it held in memory is gone."""
        pid = self._pids.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        while background.alive(pid):
            time.sleep(0.05)
        background.pid_path(self.folder, self._launches[name].key).unlink(missing_ok=True)

    def restart_empty(self, name: str) -> None:
        """Kill a service and start it again on the same port with nothing in it."""
        self.kill(name)
        self.start(name)

    def pause(self, name: str) -> None:
        """Freeze a service (SIGSTOP): its port accepts connections but nothing answers."""
        os.killpg(self._pids[name], signal.SIGSTOP)

    def resume(self, name: str) -> None:
        """Let a paused service run again (SIGCONT)."""
        pid = self._pids.get(name)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGCONT)

    def pause_for(self, name: str, seconds: float) -> None:
        """Freeze a service for `seconds`, then let it run again (also if interrupted)."""
        self.pause(name)
        try:
            time.sleep(seconds)
        finally:
            self.resume(name)

    def __enter__(self) -> PrivateServices:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
