"""A private fault proxy in front of a private service set: own ports, own PID, stopped by PID."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowcraft_celery.devtools import background, devservices
from flowcraft_celery.devtools.faultproxy import FaultPlan, ProxyControl, proxied_env
from tests.integration.faults.kit import FaultKit, fault_kit
from tests.integration.faults.private import ROOT, PrivateServices

#: Seconds the proxy may take to listen.
START_TIMEOUT = 30.0
KEY = "faultproxy"
#: The proxy's program as its command line names it (how `background.stop` recognises its PID).
PROGRAM = "faultproxy_cli"


class PrivateProxy:
    """`flowcraft-celery fault-proxy` in front of `services` (queue, blob, Cosmos), started with no
    fault; `control.set_plan` sets one. Use as a context manager."""

    def __init__(self, services: PrivateServices, folder: Path) -> None:
        self.services = services
        self.folder = folder
        self.ports: dict[str, int] = {}
        self.control: ProxyControl | None = None

    def start(self) -> None:
        ports = self.services.ports
        ports_file = self.folder / "proxy-ports.json"
        ports_file.unlink(missing_ok=True)
        code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
                "from flowcraft_celery.devtools.faultproxy_cli import fault_proxy_command; "
                "fault_proxy_command()")
        argv = [sys.executable, "-c", code, "--queue-upstream", f"http://{devservices.HOST}:{ports.queue}",
                "--blob-upstream", f"http://{devservices.HOST}:{ports.blob}",
                "--cosmos-upstream", f"https://{devservices.HOST}:{ports.cosmos}", "--ports-file", str(ports_file)]
        pid = background.start(self.folder, KEY, argv)
        deadline = time.monotonic() + START_TIMEOUT
        while not ports_file.exists():
            if not background.alive(pid) or time.monotonic() > deadline:
                log = background.log_path(self.folder, KEY)
                raise RuntimeError(f"fault proxy did not start; log {log}:\n{background.log_tail(log)}")
            time.sleep(0.1)
        time.sleep(0.1)
        self.ports = json.loads(ports_file.read_text())
        self.control = ProxyControl(self.ports["queue"])

    def stop(self) -> None:
        background.stop(self.folder, KEY, PROGRAM, grace=5.0)

    def env(self) -> dict[str, str]:
        """The services' environment with Queue, Blob and Cosmos going through the proxy."""
        return proxied_env(self.services.env(), self.ports)

    def set_plan(self, plan: FaultPlan) -> None:
        assert self.control is not None
        self.control.set_plan(plan)

    def stats(self) -> dict[str, Any]:
        assert self.control is not None
        return self.control.stats()

    def __enter__(self) -> PrivateProxy:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


@dataclass
class ProxiedKit:
    """A fault kit whose clients and workers reach private services through a private fault proxy."""

    kit: FaultKit
    services: PrivateServices
    proxy: PrivateProxy


@contextlib.contextmanager
def proxied_fault_kit(folder: Path, tag: str, **settings: str) -> Iterator[ProxiedKit]:
    """Private services, a fault proxy in front of them and a fault kit talking through it (with
    `settings` in its environment), all stopped afterwards."""
    with PrivateServices(folder / "services") as services, PrivateProxy(services, folder / "proxy") as proxy, \
            fault_kit(proxy.env(), folder, tag, **settings) as kit:
        yield ProxiedKit(kit, services, proxy)
