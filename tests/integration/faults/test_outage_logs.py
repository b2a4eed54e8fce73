"""An outage of Redis, Cosmos DB or Azure Queue Storage is told once per process: one WARNING when
it starts, one INFO when it ends, no traceback, nothing else above INFO; reconcile passes during a
Cosmos outage skip quietly, and work goes on once the service is back.

A private Redis / Azurite / Cosmos emulator set with the fault proxy in front of Azurite and Cosmos:
Redis is paused (its clients time out), Cosmos and Azure Storage answer every request with a reset
connection for a while. One worker and one beat run throughout, reconciling every 2 s.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flowcraft_celery.devtools.faultproxy import FaultPlan, Rule
from tests.integration.faults.kit import FaultKit
from tests.integration.faults.proxy import PrivateProxy, ProxiedKit, proxied_fault_kit

#: How long each service stays broken.
OUTAGE = 15.0
#: Seconds for every process to notice the service is back.
RECOVERY = 12.0
RUN_TIMEOUT = 120.0
#: One log line of a Celery process: its level, its process name, its message.
LINE = re.compile(r"^\[[^\]]*?: (?P<level>[A-Z]+)/(?P<process>[^\]]+)\] (?:\[run=[^\]]*\] )?(?P<message>.*)$")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxiedKit]:
    with proxied_fault_kit(tmp_path_factory.mktemp("outage-logs"), "olog", FLOWCRAFT_STALL_SECONDS="4",
                           FLOWCRAFT_RECONCILE_INTERVAL="2") as made:
        kit = made.kit
        group = kit.group()
        group.worker(concurrency=1)
        group.beat()
        group.wait_ready(90)
        run_id = kit.start("ft-other")[0]
        assert kit.client.wait(run_id, RUN_TIMEOUT)["status"] == "completed"
        yield made


def _logs(kit: FaultKit) -> dict[Path, str]:
    return {log: log.read_text(errors="replace") for group in kit.groups for log in group.logs if log.exists()}


#: Said once per process by the first run it retires on cosmosdb-server (which lacks transactional
#: batch), whenever that happens: a fact about the emulator, not about the outage under test.
EMULATOR_NOTICE = "transactional batch"


def _during(kit: FaultKit, outage: Callable[[], None]) -> list[tuple[str, str, str]]:
    """(file, level, process, message) of every log line written while `outage` ran and during
    the recovery after it, as (process key, level, message)."""
    before = {log: len(text) for log, text in _logs(kit).items()}
    outage()
    time.sleep(RECOVERY)
    lines = []
    for log, text in _logs(kit).items():
        new = text[before.get(log, 0):]
        assert "Traceback" not in new, new[-4000:]
        for line in new.splitlines():
            match = LINE.match(line)
            if match:
                lines.append((f"{log.stem}/{match['process']}", match["level"], match["message"]))
    return lines


def _assert_told_once(lines: list[tuple[str, str, str]], service: str) -> None:
    """Each process that noticed the outage warned once and said once that it ended; nothing else
    was logged above INFO."""
    loud = [(p, level, m) for p, level, m in lines if level not in ("INFO", "DEBUG")]
    warned = Counter(p for p, level, m in loud if level == "WARNING" and m.startswith(f"{service} at ")
                     and "does not answer" in m)
    ended = Counter(p for p, level, m in lines if level == "INFO" and m.startswith(f"{service} at ")
                    and "answers again" in m)
    assert warned, f"no process warned of the {service} outage:\n" + "\n".join(map(str, lines))
    assert all(n == 1 for n in warned.values()), warned
    assert ended == warned, (ended, warned)
    others = [entry for entry in loud if (entry[0] not in warned or "does not answer" not in entry[2])
              and EMULATOR_NOTICE not in entry[2]]
    assert not others, others


def _broken(proxy: PrivateProxy, services: str, seconds: float) -> Callable[[], None]:
    def outage() -> None:
        proxy.set_plan(FaultPlan(rules=tuple(Rule.parse(f"{s}=reset@1") for s in services.split(","))))
        try:
            time.sleep(seconds)
        finally:
            proxy.set_plan(FaultPlan())
    return outage


def test_a_redis_outage_is_one_warning_and_one_info_per_process(setup: ProxiedKit) -> None:
    lines = _during(setup.kit, lambda: setup.services.pause_for("redis", OUTAGE))
    _assert_told_once(lines, "Redis")
    _still_works(setup.kit)


def test_a_cosmos_outage_is_one_warning_and_one_info_per_process_and_reconcile_skips_quietly(setup: ProxiedKit) -> None:
    """A run whose 8 s node outlasts the stall threshold is due during the outage, so reconcile (which
    looks at due runs only) meets the outage too, and the node's own writes wait for Cosmos."""
    slow = setup.kit.start("ft-slow")[0]
    lines = _during(setup.kit, _broken(setup.proxy, "cosmos", OUTAGE))
    _assert_told_once(lines, "Cosmos DB")
    met = [m for p, level, m in lines if "ForkPool" in p and level == "INFO"
           and (m.startswith("reconcile: pass skipped") or ": reconcile failed: " in m)]
    assert met, "no reconcile pass met the outage:\n" + "\n".join(map(str, lines))
    assert any(m.startswith("reconcile: {") for _, _, m in lines[-20:]), "reconcile passes did not resume"
    assert setup.kit.client.wait(slow, RUN_TIMEOUT)["status"] == "completed"
    _still_works(setup.kit)


def test_an_azure_storage_outage_is_one_warning_and_one_info_per_process(setup: ProxiedKit) -> None:
    lines = _during(setup.kit, _broken(setup.proxy, "queue,blob", OUTAGE))
    _assert_told_once(lines, "Azure Queue Storage")
    _still_works(setup.kit)


def _still_works(kit: FaultKit) -> None:
    run_id = kit.start("ft-other")[0]
    assert kit.client.wait(run_id, RUN_TIMEOUT)["status"] == "completed"
