"""Load benchmark (issue 14): many concurrent fan-out runs on 2 workers + beat, in both dispatch modes.

    .venv/bin/python -W ignore bench/load_bench.py            # 50 runs of start -> 100 parallel -> join -> end
    .venv/bin/python -W ignore bench/load_bench.py --quick    # 5 runs x 20 wide: a smoke run

One run measures both modes, named explicitly rather than taken from the defaults:
`inline+packing` (FLOWCRAFT_INLINE_DEPTH=8, FLOWCRAFT_FANOUT_GROUP=4) and `one task per node`
(FLOWCRAFT_INLINE_DEPTH=0, FLOWCRAFT_FANOUT_GROUP=1). Each mode gets fresh workers (2 processes,
prefork -c 2, Celery's default prefetch) and `celery beat` with the default reconcile schedule and
stall threshold, then all runs are started at once. Per mode: wall time (first start to last node
finish), nodes/s, extra node executions (no-op bodies run beyond one per node), task messages
received per node, task retries, peak queue depth (the node queues' approximate message count,
sampled every second; Azure messages, so a bundle of up to 4 task messages counts once),
reconcile passes and what they re-published (from the workers' logs), ERROR lines logged, peak
worker RSS (every process of both workers), and Azure queue and Cosmos requests per node (worker
processes' counters, `bench/workflow_nodes.py`, plus the client's starts). Targets print as
PASS/MISS; the exit status is 0 either way.

Needs the dev services (the emulators' env vars default to `flowcraft-celery services up`'s). Uses
its own queue prefix, Cosmos database and Redis key prefix, all removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from azure.storage.queue import QueueServiceClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.workflow_bench import TARGET_COSMOS_PER_NODE, WORKERS, _delete_queues, _mark, worker_counts  # noqa: E402
from flowcraft_celery.devtools import devservices  # noqa: E402
from flowcraft_celery.stores.cosmos_client import request_counts  # noqa: E402
from transports.azurequeue.stats import STATS  # noqa: E402

MODES: dict[str, dict[str, str]] = {
    "inline+packing": {"FLOWCRAFT_INLINE_DEPTH": "8", "FLOWCRAFT_FANOUT_GROUP": "4"},
    "one task per node": {"FLOWCRAFT_INLINE_DEPTH": "0", "FLOWCRAFT_FANOUT_GROUP": "1"},
}
PER_NODE, OPT_IN = "one task per node", "inline+packing"
TARGET_THROUGHPUT_SHARE = 0.5
TARGET_EXTRA_EXECUTIONS = 0.01
SAMPLE_SECONDS = 1.0
_REPUBLISHED = re.compile(r"\] reconcile: \{.*'republished': (\d+)")
_STALLED = re.compile(r"\] reconcile: \{.*'stalled': (\d+)")
_ERROR = re.compile(r"^\[[^\]]*: ERROR/", re.MULTILINE)
_RECEIVED = re.compile(r"Task flowcraft\.node\.[^\[\s]+\[[^\]]+\] received")
_RETRY = re.compile(r"Task flowcraft\.node\.[^\[\s]+\[[^\]]+\] retry: ")


@dataclass
class Figures:
    """What one mode measured."""

    mode: str
    runs: int
    nodes: int
    finished: int
    seconds: float
    executions: int
    received: int
    retries: int
    peak_depth: int
    passes: int
    stalled: int
    republished: int
    errors: int
    peak_rss: float
    queue: int
    cosmos: int
    failed_runs: list[str] = field(default_factory=list)

    @property
    def nodes_per_s(self) -> float:
        """Finished nodes per second, first start to last finish."""
        return self.finished / self.seconds if self.seconds else 0.0

    @property
    def extra(self) -> float:
        """Node executions beyond one per node, as a share of the nodes."""
        return max(0, self.executions - self.finished) / max(1, self.finished)

    def row(self) -> str:
        """This mode's line of the table."""
        per = max(1, self.finished)
        return (f"{self.mode:<18} {self.finished:>6}/{self.nodes:<6} {self.seconds:8.1f} {self.nodes_per_s:8.1f} "
                f"{self.extra:9.2%} {self.received / per:8.2f} {self.retries:7} {self.peak_depth:7} "
                f"{f'{self.passes}/{self.stalled}/{self.republished}':<15} {self.errors:6} {self.peak_rss:8.1f} "
                f"{self.queue / per:8.2f} {self.cosmos / per:8.2f}")


HEADER = (f"{'mode':<18} {'finished':>13} {'wall s':>8} {'nodes/s':>8} {'extra exec':>9} {'msgs/n':>8} "
          f"{'retries':>7} {'peak q':>7} {'reconcile p/s/r':<15} {'errors':>6} {'RSS MiB':>8} {'queue/n':>8} "
          f"{'cosmos/n':>8}")


def _children(pid: int) -> list[int]:
    """The PIDs of `pid` and all its descendants (from /proc)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(") ", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def _rss_mib(pids: list[int]) -> float:
    """The summed resident set size of processes, in MiB."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


class Sampler:
    """Samples the node queues' depth and the workers' RSS every SAMPLE_SECONDS until stopped."""

    def __init__(self, conn_str: str, queue_prefix: str, worker_pids: list[int]) -> None:
        self._service = QueueServiceClient.from_connection_string(conn_str)
        self._prefix = queue_prefix
        self._pids = worker_pids
        self.peak_depth = 0
        self.peak_rss = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _depth(self) -> int:
        """Messages (visible or in flight) in the benchmark's node queues (not control or event queues)."""
        depth = 0
        for queue in self._service.list_queues(name_starts_with=self._prefix):
            if "pidbox" in queue.name or "celeryev" in queue.name:
                continue
            with contextlib.suppress(Exception):
                client = self._service.get_queue_client(queue.name)
                depth += int(client.get_queue_properties().approximate_message_count or 0)
        return depth

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            with contextlib.suppress(Exception):
                self.peak_depth = max(self.peak_depth, self._depth())
            pids = [p for pid in self._pids for p in _children(pid)]
            self.peak_rss = max(self.peak_rss, _rss_mib(pids))

    def stop(self) -> None:
        """End sampling."""
        self._stop.set()
        self._thread.join(timeout=30)


def _log_figures(logs: list[Path]) -> tuple[int, int, int, int, int, int]:
    """From worker logs: node task messages received, task retries, reconcile passes, runs found
    stalled, messages re-published by reconcile, and ERROR lines."""
    received = retries = passes = stalled = republished = errors = 0
    for log in logs:
        text = log.read_text(errors="replace")
        received += len(_RECEIVED.findall(text))
        retries += len(_RETRY.findall(text))
        passes += len(_REPUBLISHED.findall(text))
        stalled += sum(int(n) for n in _STALLED.findall(text))
        republished += sum(int(n) for n in _REPUBLISHED.findall(text))
        errors += len(_ERROR.findall(text))
    return received, retries, passes, stalled, republished, errors


def _executions(folder: Path) -> int:
    """No-op node bodies run so far by every worker process (their latest dumps)."""
    total = 0
    for path in folder.glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            total += int(json.loads(path.read_text()).get("executions", 0))
    return total


def run_mode(mode: str, client: Any, env: dict[str, str], work: Path, runs: int, timeout: float,
             conn_str: str, queue_prefix: str) -> Figures:
    """Start fresh workers and beat in `mode`, start `runs` runs at once, wait for all, measure."""
    from bench import load_nodes, workflow_nodes
    from flowcraft_celery.devtools.workers import WorkerGroup

    stats_dir = work / f"stats-{mode.replace(' ', '-')}"
    stats_dir.mkdir()
    mode_env = {**env, **MODES[mode], "BENCH_STATS_DIR": str(stats_dir)}
    rt = client.runtime
    nodes_per_run = len(rt.blueprints[load_nodes.LOAD_ID].nodes)
    with WorkerGroup(mode_env, work / f"workers-{mode.replace(' ', '-')}", cwd=ROOT) as group:
        workers = [group.worker(concurrency=2) for _ in range(WORKERS)]
        group.beat()
        group.wait_ready(120)
        time.sleep(2 * workflow_nodes.STATS_PERIOD + 0.1)
        queue_before, cosmos_before = worker_counts(stats_dir)
        executions_before = _executions(stats_dir)
        sampler = Sampler(conn_str, queue_prefix, [w.pid for w in workers])
        own_queue, own_cosmos = STATS.total("queue"), sum(request_counts().values())
        started = time.time()
        run_ids = [client.start(load_nodes.LOAD_ID).run_id for _ in range(runs)]
        own_queue = STATS.total("queue") - own_queue
        own_cosmos = sum(request_counts().values()) - own_cosmos
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(rt.ledger.finished_count(r) >= nodes_per_run for r in run_ids):
                break
            time.sleep(0.5)
        sampler.stop()
        finishes = [t for r in run_ids for _, t in rt.ledger.finish_times(r)]
        last = max(finishes) if finishes else time.time()
        failed = []
        for run_id in run_ids:
            try:
                doc = client.wait(run_id, timeout=max(5.0, deadline - time.monotonic()))
            except TimeoutError:
                failed.append(f"{run_id} (still running)")
                continue
            if doc.get("status") != "completed":
                failed.append(f"{run_id} ({doc.get('status')}: {doc.get('errors')})")
        time.sleep(2 * workflow_nodes.STATS_PERIOD + 0.1)
        queue_after, cosmos_after = worker_counts(stats_dir)
        executions = _executions(stats_dir) - executions_before
    worker_logs = [log for log in group.logs if not log.name.startswith("beat")]
    received, retries, passes, stalled, republished, errors = _log_figures(worker_logs)
    return Figures(mode, runs, runs * nodes_per_run, len(finishes), last - started, executions, received, retries,
                   sampler.peak_depth, passes, stalled, republished, errors, sampler.peak_rss,
                   queue_after - queue_before + own_queue, cosmos_after - cosmos_before + own_cosmos, failed)


def _delete_keys(url: str, prefix: str) -> None:
    """Remove the Redis keys under the benchmark's own prefix."""
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.unlink(key)


def report(figures: dict[str, Figures], runs: int, width: int) -> None:
    """Print the table, the throughput ratio and the targets."""
    print(f"\nload: {runs} concurrent runs of start -> {width} parallel -> all-join -> end "
          f"({runs * (width + 3)} nodes) per mode; {WORKERS} workers (prefork -c 2, default prefetch) + beat "
          "(default reconcile interval and stall threshold); azurequeue + Cosmos emulator + Redis\n")
    print(HEADER)
    for item in figures.values():
        print(item.row())
    print("finished: nodes finished / nodes started; msgs/n: node task messages received per node; reconcile "
          "p/s/r: passes / runs found stalled / messages re-published; RSS: peak of both workers' processes; "
          "/n: requests per node (workers plus the client's starts)")
    opt_in, per_node = figures[OPT_IN], figures[PER_NODE]
    share = per_node.nodes_per_s / opt_in.nodes_per_s if opt_in.nodes_per_s else 0.0
    print(f"\nthroughput: {PER_NODE} {per_node.nodes_per_s:.1f} nodes/s = {share:.2f}x {OPT_IN} "
          f"{opt_in.nodes_per_s:.1f} nodes/s")
    print("\ntargets:")
    print(f"  {_mark(share >= TARGET_THROUGHPUT_SHARE)} {PER_NODE} throughput {per_node.nodes_per_s:.1f} nodes/s >= "
          f"{TARGET_THROUGHPUT_SHARE:g} x {OPT_IN} ({TARGET_THROUGHPUT_SHARE * opt_in.nodes_per_s:.1f})")
    for item in figures.values():
        print(f"  {_mark(not item.failed_runs and item.finished == item.nodes)} {item.mode}: all {item.runs} runs "
              f"completed with every node ({item.finished}/{item.nodes})")
        print(f"  {_mark(item.extra < TARGET_EXTRA_EXECUTIONS)} {item.mode}: extra node executions "
              f"{item.extra:.2%} < {TARGET_EXTRA_EXECUTIONS:.0%}")
        print(f"  {_mark(item.republished == 0)} {item.mode}: reconcile re-published {item.republished} messages "
              f"(0 wanted; {item.passes} passes)")
        cosmos = item.cosmos / max(1, item.finished)
        print(f"  {_mark(cosmos <= TARGET_COSMOS_PER_NODE)} {item.mode}: {cosmos:.2f} Cosmos requests/node "
              f"<= {TARGET_COSMOS_PER_NODE:g}")
    for item in figures.values():
        for failure in item.failed_runs[:5]:
            print(f"  {item.mode}: run {failure}")


def main() -> None:
    """Run both modes in one process and print the figures and targets."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 runs x 20 wide: a smoke run")
    parser.add_argument("--runs", type=int, default=50, help="concurrent runs per mode")
    parser.add_argument("--width", type=int, default=100, help="parallel nodes per run")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for one mode's runs")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.width, args.timeout = 5, 20, 120.0
    for name, value in devservices.env_vars(devservices.Ports.from_env()).items():
        os.environ.setdefault(name, value)
    conn_str = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    tag = f"lb-{uuid.uuid4().hex[:8]}"
    queue_prefix = f"{tag}-"
    work = Path(tempfile.mkdtemp(prefix="load-bench-"))
    env = {"FLOWCRAFT_QUEUE_PREFIX": queue_prefix, "FLOWCRAFT_KEY_PREFIX": f"{tag}:", "FLOWCRAFT_COSMOS_DATABASE": tag,
           "FLOWCRAFT_NODE_MODULES": "bench.workflow_nodes", "FLOWCRAFT_BLUEPRINTS": "bench.load_nodes:blueprints",
           "BENCH_LOAD_WIDTH": str(args.width), "PYTHONPATH": str(ROOT)}
    os.environ.update(env)
    figures: dict[str, Figures] = {}
    try:
        from flowcraft_celery.distributed.client import Client

        client = Client()
        for mode in MODES:
            figures[mode] = run_mode(mode, client, env, work, args.runs, args.timeout, conn_str, queue_prefix)
    finally:
        _delete_queues(conn_str, queue_prefix)
        with contextlib.suppress(Exception):
            _delete_keys(os.environ["REDIS_URL"], f"{tag}:")
        with contextlib.suppress(Exception):
            from flowcraft_celery.stores.cosmos_client import get_client

            get_client().delete_database(tag)
    print(f"logs: {work}")
    report(figures, args.runs, args.width)


if __name__ == "__main__":
    main()
