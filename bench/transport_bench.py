"""Transport benchmark: no-op Celery tasks on azurequeue vs kombu's azurestoragequeues vs Redis,
against the raw ceiling of Azure Queue Storage (Azurite), plus requests per task and idle cost.

    .venv/bin/python -W ignore bench/transport_bench.py --tasks 2000

Needs AZURE_STORAGE_CONNECTION_STRING and REDIS_URL (the dev services). Prints one table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import redis
from azure.storage.queue import QueueClient, QueueServiceClient
from celery import Celery

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transports.azurequeue.stats import STATS, CountingTransport  # noqa: E402

THREADS = 8
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@dataclass
class Run:
    """The outcome of one throughput run."""

    name: str
    tasks_per_s: float
    requests_per_task: float | None = None
    breakdown: str = ""


def _in_threads(n: int, work: Callable[[int], object]) -> float:
    """Run work(i) for i in range(n) on THREADS threads; return the elapsed seconds."""
    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(work, range(n)))
    return time.perf_counter() - started


def _raw_queue(name: str) -> QueueClient:
    """A plain azure-storage-queue client of queue `name`, counted apart from the transport."""
    service = QueueServiceClient.from_connection_string(
        os.environ["AZURE_STORAGE_CONNECTION_STRING"], transport=CountingTransport("raw")
    )
    return service.get_queue_client(name)


def _drain(queue: QueueClient, n: int) -> float:
    """Receive(32)+delete n messages from THREADS threads; return the elapsed seconds."""
    left = [n]
    lock = threading.Lock()

    def work(_: int) -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
            page = list(next(queue.receive_messages(messages_per_page=32,
                                                    max_messages=32).by_page(), []))
            for message in page:
                queue.delete_message(message)
            with lock:
                left[0] -= len(page)

    return _in_threads(THREADS, work)


def raw_ceiling(n: int) -> tuple[float, float]:
    """Messages/s of the plain SDK from THREADS threads: send alone, receive(32)+delete alone."""
    queue = _raw_queue(f"bench-raw-{uuid.uuid4().hex[:8]}")
    queue.create_queue()
    try:
        send_s = _in_threads(n, lambda _: queue.send_message("x" * 600))
        drain_s = _drain(queue, n)
    finally:
        queue.delete_queue()
    return n / send_s, n / drain_s


def _read_stats(path: Path) -> dict[str, int]:
    """The worker's latest request counters."""
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """Counters that grew between two snapshots, by how much."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def _queue_requests(stats: dict[str, int]) -> int:
    """Requests to the queue service in a counters snapshot."""
    return sum(v for k, v in stats.items() if k.startswith("queue."))


class Worker:
    """A `celery worker` of the bench app in its own session, stopped by PID."""

    def __init__(self, env: dict[str, str], log: Path, pool: str, concurrency: int) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "bench.transport_bench_app", "worker",
                 "-l", "WARNING", "-P", pool, "-c", str(concurrency), "--without-heartbeat"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def stop(self) -> None:
        """SIGTERM the worker's session, SIGKILL it if it lingers."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def run_tasks(name: str, broker: str, n: int, args: argparse.Namespace,
              idle: bool = False) -> tuple[Run, float | None]:
    """Time n no-op tasks published from THREADS threads until the worker ran them all."""
    run_id = uuid.uuid4().hex[:8]
    rdb = redis.Redis.from_url(os.environ["REDIS_URL"])
    counter = f"bench:{run_id}"
    workdir = Path(tempfile.mkdtemp(prefix="transport-bench-"))
    stats_file = workdir / "stats.json"
    env = dict(os.environ, BENCH_BROKER_URL=broker, BENCH_QUEUE=f"bench-{run_id}",
               BENCH_PREFIX=f"bench-{run_id}-", BENCH_COUNTER=counter,
               BENCH_STATS_FILE=str(stats_file), PYTHONPATH=str(ROOT),
               BENCH_PREFETCH_MULTIPLIER=str(args.prefetch_multiplier))
    os.environ.update({k: env[k] for k in ("BENCH_QUEUE", "BENCH_PREFIX", "BENCH_COUNTER")})
    client = Celery("transport_bench_client", broker=broker)
    client.conf.update(task_default_queue=env["BENCH_QUEUE"],
                       broker_transport_options={"queue_name_prefix": env["BENCH_PREFIX"]})
    worker = Worker(env, workdir / "worker.log", args.pool, args.concurrency)
    idle_rate = None
    try:
        client.send_task("bench.noop")
        _wait(lambda: rdb.get(counter) == b"1", 120, worker)
        time.sleep(3)
        worker_before = _read_stats(stats_file)
        client_before = STATS.total("queue")
        client_before_all = STATS.snapshot()
        started = time.perf_counter()
        _in_threads(n, lambda _: client.send_task("bench.noop"))
        _wait(lambda: int(rdb.get(counter) or 0) >= n + 1, 600, worker)
        elapsed = time.perf_counter() - started
        time.sleep(1.0)
        per_task = None
        breakdown = ""
        if broker.startswith("azurequeue"):
            worker_after = _read_stats(stats_file)
            used = (_queue_requests(worker_after) - _queue_requests(worker_before)
                    + STATS.total("queue") - client_before)
            per_task = used / n
            kinds = _diff(worker_after, worker_before)
            for kind, count in _diff(STATS.snapshot(), client_before_all).items():
                kinds[kind] = kinds.get(kind, 0) + count
            breakdown = ", ".join(f"{k.removeprefix('queue.')} {v / n:.3f}"
                                  for k, v in sorted(kinds.items()) if k.startswith("queue."))
        if idle:
            time.sleep(args.idle_warmup)
            first = _queue_requests(_read_stats(stats_file))
            time.sleep(args.idle_window)
            idle_rate = (_queue_requests(_read_stats(stats_file)) - first) / args.idle_window
        return Run(name, n / elapsed, per_task, breakdown), idle_rate
    finally:
        worker.stop()
        rdb.delete(counter)
        client.close()


def _wait(done: Callable[[], bool], timeout: float, worker: Worker) -> None:
    """Wait for `done`, failing loudly if the worker died or time ran out."""
    deadline = time.monotonic() + timeout
    while not done():
        if worker.proc.poll() is not None:
            raise RuntimeError(f"worker exited:\n{worker.log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out:\n{worker.log.read_text()[-3000:]}")
        time.sleep(0.05)


def main() -> None:
    """Run every measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--kombu-tasks", type=int, default=1000,
                        help="tasks for kombu's azurestoragequeues (it is slow)")
    parser.add_argument("--pool", default="threads")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--prefetch-multiplier", type=int, default=8)
    parser.add_argument("--idle-warmup", type=float, default=60.0)
    parser.add_argument("--idle-window", type=float, default=60.0)
    args = parser.parse_args()
    queue_url = "http://127.0.0.1:10001/devstoreaccount1"
    first = raw_ceiling(args.tasks)
    ours, idle = run_tasks("azurequeue (ours)", "azurequeue://", args.tasks, args, idle=True)
    kombu, _ = run_tasks("kombu azurestoragequeues",
                         f"azurestoragequeues://{AZURITE_KEY}@{queue_url}", args.kombu_tasks, args)
    on_redis, _ = run_tasks("Celery on Redis", os.environ["REDIS_URL"], args.tasks, args)
    last = raw_ceiling(args.tasks)
    send, drain = max(first[0], last[0]), max(first[1], last[1])
    ceiling = 1 / (1 / send + 1 / drain)
    print(f"\nworker: -P {args.pool} -c {args.concurrency}, prefetch multiplier "
          f"{args.prefetch_multiplier}; publisher: {THREADS} threads")
    print(f"raw Azurite, plain SDK, {THREADS} threads, best of a run before and after the "
          f"transports: send {send:.0f} msg/s, "
          f"receive(32)+delete {drain:.0f} msg/s; ceiling for a whole message life on one "
          f"Azurite (1/(1/send + 1/drain)) {ceiling:.0f} msg/s, optimistic min(send, drain) "
          f"{min(send, drain):.0f} msg/s\n")
    print(f"{'':28} {'tasks/s':>9} {'vs ceiling':>11} {'vs min':>7} {'vs ours':>8} "
          f"{'req/task':>9}")
    for run in (ours, kombu, on_redis):
        rpt = f"{run.requests_per_task:.3f}" if run.requests_per_task is not None else "-"
        print(f"{run.name:28} {run.tasks_per_s:9.1f} {run.tasks_per_s / ceiling:11.2f} "
              f"{run.tasks_per_s / min(send, drain):7.2f} {run.tasks_per_s / ours.tasks_per_s:8.2f} "
              f"{rpt:>9}")
    print(f"\nazurequeue requests per task by kind: {ours.breakdown}")
    queues = 2
    assert idle is not None
    print(f"\nidle worker (azurequeue, {queues} queues: tasks + pidbox), after "
          f"{args.idle_warmup:.0f} s idle, over {args.idle_window:.0f} s: {idle:.3f} req/s = "
          f"{idle / queues:.3f} req/s per queue")


if __name__ == "__main__":
    main()
