"""Scale benchmark (issue 22): what thousands of idle live runs cost a deployment.

    .venv/bin/python -W ignore bench/scale_bench.py                    # 1,000 then 10,000 live runs
    .venv/bin/python -W ignore bench/scale_bench.py --sizes 100,300    # a smoke run

Grows one deployment to each size in turn (cumulatively: the second size adds to the first) with a
mix of live runs: awaiting an approval (40 %), sleeping for a day (30 %), subflow parents whose
child sleeps (15 % parents + 15 % children), and a fixed number of active fan-outs whose parallel
nodes wait on a queue nobody consumes (their work is due at every pass, whatever the size). Two
workers (prefork -c 2) drive the runs to their idle states and are then stopped, so the figures
at each size are the benchmark's own requests only:

* start throughput (runs/s, `Client.start` from 8 threads, while the workers run);
* reconcile: the passes until every newly idle run was looked at once ("settle"), then
  STEADY_PASSES (7) steady passes one stall threshold apart: pass time (wall and this process's
  CPU time, which a busy machine disturbs far less) as median and mean, and requests per pass
  (Cosmos requests counted by `stores.cosmos_client`, Azure queue requests by the transport's
  counters, Redis commands by the `total_commands_processed` of a private `redis-server` only
  this deployment uses);
* Redis memory per live run (`used_memory` over the baseline) and Cosmos items and bytes per live
  run (every item of the deployment's database);
* latency (median of 5) of `runs` (newest 20), `status`, `metrics` (one full collection, nothing
  cached) and a new `start`, each with the CPU time this process spent on it and the CPU time the
  local emulators (cosmosdb-server, Azurite: the processes listening on the Cosmos and queue
  endpoints' ports, when they run on this machine) spent meanwhile, for this or any other client.

Then it prints the 10,000-to-1,000 (last-to-first size) ratios of the per-pass cost (requests,
wall time median and mean, CPU time median and mean) and of the latencies; the target is a
per-pass ratio of at most 1.5. Uses its own queue prefix, Cosmos
database and Redis server, all removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psutil
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import scale_nodes  # noqa: E402
from bench.workflow_bench import PrivateRedis, _delete_queues  # noqa: E402
from flowcraft_celery.devtools import devservices  # noqa: E402
from flowcraft_celery.stores.cosmos_client import request_counts  # noqa: E402
from transports.azurequeue.stats import STATS  # noqa: E402

#: Shares of the sizes: awaiting, sleeping, subflow parents (each with a sleeping child run).
SHARES = {"awaiting": 0.40, "sleeping": 0.30, "parents": 0.15}
FANS = 20
START_THREADS = 8
START_ATTEMPTS = 3
LATENCY_SAMPLES = 5
STEADY_PASSES = 7
MAX_SETTLE_PASSES = 400
#: Seconds between looks at how many runs settled (each look is four queries, scans on the emulator).
SETTLE_POLL = 15.0
TARGET_RATIO = 1.5


@dataclass
class PassCost:
    """One reconcile pass: wall and CPU time, requests by service, and runs it looked at."""

    seconds: float
    cpu: float
    cosmos: int
    redis: int
    queue: int
    looked_at: int
    emulators: float = 0.0

    @property
    def requests(self) -> int:
        """Requests of every service."""
        return self.cosmos + self.redis + self.queue


@dataclass
class SizeFigures:
    """What one size measured."""

    live: int
    mix: dict[str, int]
    starts_per_s: float
    start_failures: int
    failed_runs: int
    settle_passes: int
    settle_looked_at: int
    settle_seconds: float
    steady: list[PassCost] = field(default_factory=list)
    redis_bytes: float = 0.0
    cosmos_items: float = 0.0
    cosmos_bytes: float = 0.0
    latency: dict[str, float] = field(default_factory=dict)
    latency_cpu: dict[str, float] = field(default_factory=dict)
    latency_emulators: dict[str, float] = field(default_factory=dict)

    def mean(self, pick: Callable[[PassCost], float]) -> float:
        """The mean of a figure over the steady passes."""
        return statistics.fmean(pick(p) for p in self.steady) if self.steady else 0.0

    def median(self, pick: Callable[[PassCost], float]) -> float:
        """The median of a figure over the steady passes."""
        return statistics.median(pick(p) for p in self.steady) if self.steady else 0.0


class RedisCounter:
    """Commands processed and memory used by the private Redis (INFO's own call left out)."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)

    def commands(self) -> int:
        """Commands processed so far (this INFO excluded)."""
        return int(self._client.info("stats")["total_commands_processed"])

    def memory(self) -> int:
        """Bytes of memory the server uses."""
        return int(self._client.info("memory")["used_memory"])


class EmulatorCPU:
    """CPU seconds of the local emulator processes that listen on the Cosmos and queue endpoints' ports
    (none when the endpoints are elsewhere), so a latency can be split into ours and the emulators'."""

    def __init__(self, environ: dict[str, str]) -> None:
        ports = set()
        for endpoint in (environ["AZURE_COSMOS_CONNECTION_STRING"], environ["AZURE_STORAGE_CONNECTION_STRING"]):
            for part in endpoint.split(";"):
                name, _, value = part.partition("=")
                url = urlparse(value)
                if name in ("AccountEndpoint", "QueueEndpoint") and url.hostname in ("127.0.0.1", "localhost"):
                    ports.add(url.port)
        pids = {c.pid for c in psutil.net_connections("tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port in ports and c.pid}
        self.processes = [psutil.Process(pid) for pid in sorted(pids)]

    def seconds(self) -> float:
        """CPU seconds the emulator processes have used so far."""
        total = 0.0
        for process in self.processes:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total


def _counts(counter: RedisCounter) -> tuple[int, int, int]:
    return sum(request_counts().values()), counter.commands(), STATS.total("queue")


def measured_pass(reconcile_once: Callable[[], dict[str, int]], counter: RedisCounter,
                  emulators: EmulatorCPU) -> PassCost:
    """Run one reconcile pass in this process and count what it cost."""
    cosmos, commands, queue = _counts(counter)
    began, cpu, emulated = time.perf_counter(), time.process_time(), emulators.seconds()
    report = reconcile_once()
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    emulated = emulators.seconds() - emulated
    cosmos2, commands2, queue2 = _counts(counter)
    return PassCost(seconds, cpu, cosmos2 - cosmos, commands2 - commands - 1, queue2 - queue,
                    int(report.get("stalled", 0)), emulated)


def start_runs(client: Any, plan: list[str]) -> tuple[float, int]:
    """Start one run of each blueprint id in `plan` from START_THREADS threads; runs/s, and how many
    starts failed (StartError: nothing of that run was left) and were tried again."""
    from flowcraft_celery.distributed.runs.errors import StartError

    failures = [0]

    def start(blueprint_id: str) -> None:
        for attempt in range(START_ATTEMPTS):
            try:
                client.start(blueprint_id)
                return
            except StartError:
                failures[0] += 1
                if attempt == START_ATTEMPTS - 1:
                    raise
                time.sleep(1)

    began = time.perf_counter()
    with ThreadPoolExecutor(START_THREADS) as pool:
        list(pool.map(start, plan))
    return len(plan) / (time.perf_counter() - began), failures[0]


def _count(container: Any, where: str, parameters: list[dict[str, Any]]) -> int:
    rows = container.query_items(f"SELECT VALUE COUNT(1) FROM c WHERE {where}", parameters=parameters,
                                 enable_cross_partition_query=True)
    return sum(int(n) for n in rows)


def wait_settled(database: Any, deployment: str, want: dict[str, int], timeout: float) -> int:
    """Wait until the runs reached their idle states: so many awaiting, sleeping and children (a
    parent that failed, because its child could not be started, has neither); the failed runs."""
    runs = database.get_container_client("runs")
    scope = [{"name": "@d", "value": deployment}]
    deadline = time.monotonic() + timeout
    while True:
        now = [{"name": "@now", "value": time.time()}]
        seen = {
            "awaiting": _count(runs, "c.deployment = @d AND c.status = 'awaiting'", scope),
            "sleeping": _count(runs, "c.deployment = @d AND c.status = 'running' AND IS_DEFINED(c.wakeAt) "
                               "AND c.wakeAt > @now", scope + now),
            "children": _count(runs, "c.deployment = @d AND IS_DEFINED(c.parentRunId) "
                               "AND IS_STRING(c.parentRunId)", scope),
        }
        failed = _count(runs, "c.deployment = @d AND c.status = 'failed'", scope)
        print(f"  settling: {seen} of {want}, {failed} failed", flush=True)
        if seen["awaiting"] >= want["awaiting"] and seen["sleeping"] + failed >= want["sleeping"] \
                and seen["children"] + failed >= want["children"]:
            return failed
        if time.monotonic() > deadline:
            raise TimeoutError(f"runs did not reach their idle states within {timeout:.0f} s: {seen} of {want}")
        time.sleep(SETTLE_POLL)


def cosmos_footprint(database: Any) -> tuple[int, int]:
    """Items and JSON bytes of every container of the database."""
    items = size = 0
    for props in database.list_containers():
        container = database.get_container_client(props["id"])
        for item in container.query_items("SELECT * FROM c", enable_cross_partition_query=True):
            items += 1
            size += len(json.dumps({k: v for k, v in item.items() if not k.startswith("_")}, default=str))
    return items, size


def latency(action: Callable[[], Any], emulators: EmulatorCPU) -> tuple[float, float, float]:
    """Median seconds of LATENCY_SAMPLES calls: wall, this process's CPU and the emulators' CPU time."""
    walls, cpus, emulated = [], [], []
    for _ in range(LATENCY_SAMPLES):
        began, cpu, emulator = time.perf_counter(), time.process_time(), emulators.seconds()
        action()
        walls.append(time.perf_counter() - began)
        cpus.append(time.process_time() - cpu)
        emulated.append(emulators.seconds() - emulator)
    return statistics.median(walls), statistics.median(cpus), statistics.median(emulated)


def plan_for(size: int, already: dict[str, int]) -> tuple[list[str], dict[str, int]]:
    """The blueprint ids to start to grow the mix to `size` live runs, and the mix then."""
    fans = FANS
    rest = size - fans
    parents = round(rest * SHARES["parents"])
    mix = {"fans": fans, "parents": parents, "children": parents,
           "awaiting": round(rest * SHARES["awaiting"])}
    mix["sleeping"] = size - sum(mix.values())
    ids = {"fans": scale_nodes.FAN_ID, "parents": scale_nodes.PARENT_ID, "awaiting": scale_nodes.AWAIT_ID,
           "sleeping": scale_nodes.SLEEP_ID}
    plan = [ids[kind] for kind in ids for _ in range(mix[kind] - already.get(kind, 0))]
    plan.sort(key=lambda _: uuid.uuid4().hex)  # interleave the kinds
    return plan, mix


def measure_size(size: int, client: Any, env: dict[str, str], work: Path, counter: RedisCounter,
                 emulators: EmulatorCPU, database: Any, deployment: str, stall: float, already: dict[str, int],
                 baseline_memory: int) -> SizeFigures:
    """Grow to `size` live runs with workers, stop them, then measure reconcile, footprint, latency."""
    from flowcraft_celery.devtools.workers import WorkerGroup
    from flowcraft_celery.distributed.ops.metrics import FlowcraftCollector
    from flowcraft_celery.distributed.reconcile.passes import reconcile

    plan, mix = plan_for(size, already)
    print(f"size {size}: starting {len(plan)} runs ({mix})", flush=True)
    with WorkerGroup(env, work / f"workers-{size}", cwd=ROOT) as group:
        for _ in range(2):
            group.worker(concurrency=2)
        group.wait_ready(120)
        starts_per_s, start_failures = start_runs(client, plan)
        print(f"  started at {starts_per_s:.1f} runs/s ({start_failures} starts failed and were tried again)",
              flush=True)
        failed = wait_settled(database, deployment, {"awaiting": mix["awaiting"],
                                                     "sleeping": mix["sleeping"] + mix["children"],
                                                     "children": mix["children"]}, timeout=3600)
        time.sleep(3)
    app, rt = client.app, client.runtime
    time.sleep(stall + 1)

    def once() -> dict[str, int]:
        return reconcile(app, rt, stall).to_dict()

    settle: list[PassCost] = []
    began = time.perf_counter()
    while len(settle) < MAX_SETTLE_PASSES:
        settle.append(measured_pass(once, counter, emulators))
        if settle[-1].looked_at <= FANS:
            break
    settle_seconds = time.perf_counter() - began
    figures = SizeFigures(size, mix, starts_per_s, start_failures, failed, len(settle),
                          sum(p.looked_at for p in settle), settle_seconds)
    for _ in range(STEADY_PASSES):
        time.sleep(stall + 1)
        figures.steady.append(measured_pass(once, counter, emulators))
        cost = figures.steady[-1]
        print(f"  steady pass: {cost.seconds:.2f} s (CPU {cost.cpu:.3f} s), {cost.looked_at} runs looked at, "
              f"cosmos {cost.cosmos}, "
              f"redis {cost.redis}, queue {cost.queue}", flush=True)
    figures.redis_bytes = (counter.memory() - baseline_memory) / size
    items, size_bytes = cosmos_footprint(database)
    figures.cosmos_items, figures.cosmos_bytes = items / size, size_bytes / size
    some_run = rt.statuses.list_runs(limit=1)[0]["runId"]
    actions: dict[str, Callable[[], Any]] = {
        "runs": lambda: client.list_runs(limit=20),
        "status": lambda: client.status(some_run),
        "metrics": lambda: list(FlowcraftCollector(app).collect()),
        "start": lambda: client.start(scale_nodes.NEW_ID),
    }
    for name, action in actions.items():
        figures.latency[name], figures.latency_cpu[name], figures.latency_emulators[name] = latency(action, emulators)
    return figures


def report(sizes: list[SizeFigures]) -> None:
    """Print one row per size, the pass times and latencies, and the last-to-first ratios."""
    print("\nscale: live runs idle (awaiting / sleeping / subflow parent + sleeping child) plus "
          f"{FANS} active fan-outs; reconcile in this process, workers stopped\n")
    print(f"{'live':>6} {'start/s':>8} {'settle':>16} {'looked':>7} {'cosmos':>7} {'redis':>7} "
          f"{'queue':>6} {'Redis B/run':>11} {'items/run':>9} {'Cosmos B/run':>12}")
    for s in sizes:
        settle = f"{s.settle_passes}p/{s.settle_looked_at}r/{s.settle_seconds:.0f}s"
        print(f"{s.live:>6} {s.starts_per_s:8.1f} {settle:>16} "
              f"{s.mean(lambda p: p.looked_at):7.1f} {s.mean(lambda p: p.cosmos):7.1f} "
              f"{s.mean(lambda p: p.redis):7.1f} "
              f"{s.mean(lambda p: p.queue):6.1f} {s.redis_bytes:11.0f} {s.cosmos_items:9.2f} {s.cosmos_bytes:12.0f}")
    print("settle: passes / runs looked at / seconds until every newly idle run was looked at once; pass figures: "
          f"mean of {STEADY_PASSES} steady passes one stall threshold apart (requests per pass)")
    print(f"\n{'live':>6} {'pass s median':>13} {'mean':>6} {'CPU s median':>12} {'mean':>6} {'emulators s':>11}   "
          "latency ms (CPU ms: this process, emulators): runs / status / metrics / start")
    for s in sizes:
        latencies = " / ".join(f"{s.latency[name] * 1e3:.1f} ({s.latency_cpu[name] * 1e3:.0f}, "
                               f"{s.latency_emulators[name] * 1e3:.0f})" for name in s.latency)
        print(f"{s.live:>6} {s.median(lambda p: p.seconds):13.3f} {s.mean(lambda p: p.seconds):6.3f} "
              f"{s.median(lambda p: p.cpu):12.3f} {s.mean(lambda p: p.cpu):6.3f} "
              f"{s.median(lambda p: p.emulators):11.3f}   {latencies}")
        print(f"{'':>6} passes (wall / CPU s): " + ", ".join(f"{p.seconds:.2f}/{p.cpu:.3f}" for p in s.steady))
    print("emulators: CPU time of the local cosmosdb-server and Azurite processes meanwhile (median; whoever asked; "
          "counted in clock ticks of 10 ms)")
    for s in sizes:
        if s.failed_runs or s.start_failures:
            print(f"  {s.live}: {s.start_failures} starts refused by the busy broker and tried again; {s.failed_runs} "
                  "subflow parents failed because their child's start was refused")
    if len(sizes) < 2:
        return
    first, last = sizes[0], sizes[-1]

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("inf") if a else 1.0

    print(f"\nratios {last.live:,} / {first.live:,} live runs (target <= {TARGET_RATIO}):")
    per_pass: dict[str, Callable[[PassCost], float]] = {
        "requests": lambda p: p.requests, "wall time": lambda p: p.seconds, "CPU time": lambda p: p.cpu}
    for name, pick in per_pass.items():
        median, mean = ratio(last.median(pick), first.median(pick)), ratio(last.mean(pick), first.mean(pick))
        print(f"  {'PASS' if median <= TARGET_RATIO else 'MISS'} {name} per reconcile pass: median {median:.2f}, "
              f"mean {mean:.2f}")
    for name in first.latency:
        print(f"  latency of {name}: {ratio(last.latency[name], first.latency[name]):.2f} "
              f"(this process's CPU: {ratio(last.latency_cpu[name], first.latency_cpu[name]):.2f}; emulators' CPU "
              f"{first.latency_emulators[name] * 1e3:.0f} -> {last.latency_emulators[name] * 1e3:.0f} ms)")


def main() -> None:
    """Measure each size in turn and print the figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000", help="live run counts, ascending, comma separated")
    parser.add_argument("--stall", type=float, default=10.0, help="stall threshold (s) of workers and passes")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    for name, value in devservices.env_vars(devservices.Ports.from_env()).items():
        os.environ.setdefault(name, value)
    conn_str = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    tag = f"sc-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    private = PrivateRedis(work / "redis.log")
    env = {"FLOWCRAFT_QUEUE_PREFIX": f"{tag}-", "FLOWCRAFT_KEY_PREFIX": f"{tag}:", "FLOWCRAFT_COSMOS_DATABASE": tag,
           "REDIS_URL": private.url(0), "FLOWCRAFT_STALL_SECONDS": str(args.stall),
           "FLOWCRAFT_NODE_MODULES": "bench.workflow_nodes", "FLOWCRAFT_BLUEPRINTS": "bench.scale_nodes:blueprints",
           "BENCH_PARKED_QUEUE": f"{tag}-parked", "PYTHONPATH": str(ROOT)}
    os.environ.update(env)
    measured: list[SizeFigures] = []
    try:

        from flowcraft_celery.distributed.client import Client
        from flowcraft_celery.settings import Settings
        from flowcraft_celery.stores.cosmos_client import get_client

        client = Client()
        counter = RedisCounter(private.url(0))
        emulators = EmulatorCPU(dict(os.environ))
        database = get_client().get_database_client(tag)
        deployment = Settings.from_conf(client.app.conf).deployment
        baseline = counter.memory()
        already: dict[str, int] = {}
        for size in sizes:
            figures = measure_size(size, client, env, work, counter, emulators, database, deployment, args.stall,
                                   already, baseline)
            already = figures.mix
            measured.append(figures)
            report(measured)
    finally:
        _delete_queues(conn_str, f"{tag}-")
        with contextlib.suppress(Exception):
            from flowcraft_celery.stores.cosmos_client import get_client

            get_client().delete_database(tag)
        private.stop()
    print(f"logs: {work}")


if __name__ == "__main__":
    main()
