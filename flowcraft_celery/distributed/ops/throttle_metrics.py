"""Throttled answers a process saw, added to the deployment's counters for `flowcraft-celery metrics`.

Each worker process (the main one receives, the pool's children send and write) and beat count
the throttled answers of Azure Queue Storage and Cosmos DB (`transports.azurequeue.
THROTTLES`); a daemon thread adds them to the Redis counters hash every `INTERVAL` seconds, one
script call per kind seen, none while nothing is throttled. The metrics endpoint exports them as
`flowcraft_throttled_answers{service, kind}`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

from flowcraft_celery.distributed.core.runtime import runtime_for
from transports.azurequeue import THROTTLES

logger = logging.getLogger("flowcraft.metrics")

#: Seconds between two reports of one process.
INTERVAL = 5.0
#: The counter event throttled answers are counted under (`throttled|<service>|<kind>`).
EVENT = "throttled"

_started: dict[int, threading.Event] = {}
_lock = threading.Lock()


def report_once(conf: Mapping[str, Any]) -> int:
    """Add the throttled answers counted since the last report to the shared counters; how many."""
    counts = THROTTLES.drain()
    if not counts:
        return 0
    timeline = runtime_for(conf).timeline
    try:
        for key, amount in counts.items():
            timeline.count(f"{EVENT}|{key}", amount)
    except Exception as exc:  # Redis down: keep the counts for the next report
        for key, amount in counts.items():
            for _ in range(amount):
                THROTTLES.add_undrained(key)
        logger.debug("throttle counts not reported: %s", exc)
        return 0
    return sum(counts.values())


def start_reporter(conf: Mapping[str, Any], interval: float = INTERVAL) -> None:
    """Report this process's throttled answers every `interval` seconds (once per process)."""
    with _lock:
        if os.getpid() in _started:
            return
        stop = threading.Event()
        _started[os.getpid()] = stop

    def loop() -> None:
        while not stop.wait(interval):
            try:
                report_once(conf)
            except Exception:  # never let metrics kill the thread
                logger.debug("throttle report failed", exc_info=True)

    threading.Thread(target=loop, name="flowcraft-throttle-report", daemon=True).start()
