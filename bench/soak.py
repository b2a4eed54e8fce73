"""Soak (issue 22): a steady arrival of runs through 2 workers and beat; nothing lost, nothing run
twice, flat worker memory, Redis back to its baseline after retention, reconcile re-sent nothing.

    make soak                       # NODES=2000: a CI-sized smoke (about 5 minutes)
    make soak NODES=100000          # the full soak (hours on a small machine)
    .venv/bin/python -W ignore bench/soak.py --nodes 1000 --rate 1

Runs of start -> 8 parallel -> all-join (10 nodes each) arrive at `--rate` runs per second until
`--nodes` node executions are due; two `celery worker` processes (prefork -c 2, Celery's other
defaults, no -Q) and one `celery beat` serve them, over an Azurite, a cosmosdb-server and a
`redis-server` of the soak's own on free ports (so its load neither slows nor is stalled by other work
on the dev services, and Redis's memory is the deployment's alone; `--shared-emulators` uses the dev
services' Azurite and Cosmos emulator instead). A start that is not taken in time is tried again with
the same run id, as a user would, and counted. At the end it checks and prints:

* every run completed, and each node of each run executed exactly once (the node appends
  `<run> <node>` to a file; a lost message shows as a missing line, a redelivery as a second one);
* the workers' resident memory (each worker's main process and pool children, sampled every
  `--sample` seconds while runs arrive): first, last and max;
* Redis `used_memory` and key count: the baseline before the first run, at the end of the
  arrivals, and after the runs' retention (`--retention` seconds: FLOWCRAFT_RETENTION_DAYS, and
  Celery's `result_expires` for node task results, `bench/soak_config.py`) has passed: back to the
  baseline means no key outlives its expiry (what is left is listed by key pattern);
* reconcile's counters (`reconcile|quiet`, `reconcile|active`, `republished|` of the deployment's
  metrics hash): passes ran, and none re-sent queued work.

Exit status 1 when a check fails. Everything it made (queues, database, Redis) is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import psutil
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import soak_nodes  # noqa: E402
from bench.workflow_bench import PrivateRedis, _delete_queues, _free_port  # noqa: E402
from flowcraft_celery.devtools import background, devservices  # noqa: E402
from flowcraft_celery.distributed.client import Client  # noqa: E402
from flowcraft_celery.distributed.runs.errors import StartError  # noqa: E402
from flowcraft_celery.distributed.runs.retention import purge  # noqa: E402

#: Times one start is tried (same run id) before the soak gives up: a start that the broker or a
#: store did not take in time is retried, as a user would, and counted.
START_TRIES = 5


class PrivateEmulators:
    """Azurite and the Cosmos emulator of the soak's own on free ports, stopped by PID: an hour of
    load must neither slow the shared dev services nor be stalled by other work on them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ports = devservices.Ports(*(_free_port() for _ in range(5)))
        launches = devservices.launches(self.ports, ROOT)
        self.launches = [launches[0], next(la for la in launches if la.key.startswith("cosmosdb-server"))]

    def start(self) -> dict[str, str]:
        """Start both, wait until they answer; the variables that point the app at them."""
        for launch in self.launches:
            background.start(self.folder, launch.key, launch.argv)
        deadline = time.monotonic() + 90
        while not all(e.probe(e.host, e.port) for la in self.launches for e in la.endpoints):
            if time.monotonic() > deadline:
                raise RuntimeError(f"private emulators did not answer; logs in {self.folder}")
            time.sleep(0.2)
        names = ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_COSMOS_CONNECTION_STRING", "FLOWCRAFT_COSMOS_VERIFY_TLS")
        return {name: value for name, value in devservices.env_vars(self.ports).items() if name in names}

    def stop(self) -> None:
        """Stop both by PID (TERM, then KILL)."""
        for launch in self.launches:
            background.stop(self.folder, launch.key, launch.program, grace=5.0)


def start_run(client: Client) -> tuple[str, int]:
    """Start one soak run; a start not taken in time is tried again with the same run id (so it
    never starts twice). Returns the run id and the retries it needed."""
    run_id = uuid.uuid4().hex
    for retry in range(START_TRIES):
        try:
            return client.start(soak_nodes.SOAK_ID, run_id=run_id).run_id, retry
        except StartError as exc:
            if retry == START_TRIES - 1:
                raise
            print(f"start of {run_id} not taken ({exc}); trying again", flush=True)
            time.sleep(2.0 * (retry + 1))
    raise AssertionError("unreachable")


class Purger(threading.Thread):
    """Every `every` seconds, `purge` of the finished runs older than the retention: what Cosmos
    DB's per-item TTL does, which cosmosdb-server lacks. Without it the emulator keeps every item
    and answers each query by scanning them all, so a long soak slows down as it goes (measured:
    18 nodes/s at the start, 4 nodes/s after 20,000 nodes)."""

    def __init__(self, client: Client, retention: float, every: float) -> None:
        super().__init__(name="soak-purge", daemon=True)
        self.client, self.retention, self.every = client, retention, every
        self.purged = 0
        self.failures = 0
        self.done = threading.Event()

    def run(self) -> None:
        """Purge until told to stop."""
        while not self.done.wait(self.every):
            try:
                self.purged += sum(purge(self.client.runtime, self.retention).runs.values())
            except Exception as exc:  # an emulator busy for a moment: the next round catches up
                self.failures += 1
                print(f"purge failed ({type(exc).__name__}: {exc}); next round in {self.every:g} s", flush=True)


#: Slack allowed over the Redis baseline after retention (allocator noise), bytes.
MEMORY_SLACK = 1024 * 1024
FINAL = {"completed", "failed", "cancelled"}


def worker_rss(pids: list[int]) -> int:
    """Resident bytes of the given processes and all their children."""
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            for member in (process, *process.children(recursive=True)):
                with contextlib.suppress(psutil.Error):
                    total += member.memory_info().rss
    return total


def redis_figures(client: redis.Redis) -> tuple[int, int]:
    """Used memory (bytes) and key count of the private Redis."""
    return int(client.info("memory")["used_memory"]), int(client.dbsize())


def leftover_keys(client: redis.Redis, baseline: set[str], run_ids: list[str]) -> dict[str, tuple[int, int]]:
    """Keys made since the baseline that are still there, by pattern (run ids as `<run>`): count
    and one key's TTL."""
    runs = set(run_ids)
    found: dict[str, tuple[int, int]] = {}
    for raw in client.scan_iter(count=1000):
        key = raw.decode()
        if key in baseline:
            continue
        pattern = ":".join("<run>" if part in runs else part for part in key.split(":"))
        count, ttl = found.get(pattern, (0, int(client.ttl(key))))
        found[pattern] = (count + 1, ttl)
    return found


def executions(calls: Path) -> Counter[tuple[str, str]]:
    """How often each (run, node) executed."""
    if not calls.exists():
        return Counter()
    pairs = (line.split(" ", 1) for line in calls.read_text().splitlines() if line)
    return Counter((run_id, node_id) for run_id, node_id in pairs)


def poll(client: Client, pending: set[str], statuses: Counter[str]) -> None:
    """Move the runs of `pending` that ended to `statuses` (a run no longer found counts as `gone`)."""
    from flowcraft_celery.distributed.runs.errors import RunError

    for run_id in list(pending):
        try:
            status = str(client.status(run_id).get("status"))
        except RunError:
            status = "gone"
        if status in FINAL or status == "gone":
            statuses[status] += 1
            pending.discard(run_id)


def soak(args: argparse.Namespace, env: dict[str, str], work: Path, private: redis.Redis) -> bool:
    """Run the soak; print its figures; whether every check held."""
    from flowcraft_celery.devtools.workers import WorkerGroup

    runs_due = max(1, args.nodes // soak_nodes.NODES_PER_RUN)
    calls = Path(env["BENCH_SOAK_CALLS"])
    client = Client()
    rss: list[int] = []
    run_ids: list[str] = []
    retried = 0
    with WorkerGroup(env, work / "workers", cwd=ROOT) as group:
        workers = [group.worker(concurrency=2).pid for _ in range(2)]
        group.beat()
        group.wait_ready(120)
        baseline = redis_figures(private)
        baseline_keys = {key.decode() for key in private.scan_iter(count=1000)}
        purger = Purger(client, args.retention, args.purge_every)
        if args.purge_every > 0:
            purger.start()
        began = time.monotonic()
        next_sample = began
        pending: set[str] = set()
        statuses: Counter[str] = Counter()
        last_poll = began
        for i in range(runs_due):
            time.sleep(max(0.0, began + i / args.rate - time.monotonic()))
            run_id, retries = start_run(client)
            retried += retries
            run_ids.append(run_id)
            pending.add(run_id)
            if time.monotonic() - last_poll >= 1:  # poll often: a finished run is gone after its retention
                poll(client, pending, statuses)
                last_poll = time.monotonic()
            if time.monotonic() >= next_sample:
                rss.append(worker_rss(workers))
                next_sample += args.sample
        deadline = time.monotonic() + args.timeout
        while pending and time.monotonic() < deadline:
            poll(client, pending, statuses)
            if time.monotonic() >= next_sample:
                rss.append(worker_rss(workers))
                next_sample += args.sample
            if pending:
                time.sleep(2)
        elapsed = time.monotonic() - began
        purger.done.set()
        rss.append(worker_rss(workers))
        at_end = redis_figures(private)
        counters = {k.decode(): int(v) for k, v in private.hgetall(f"{env['FLOWCRAFT_KEY_PREFIX']}metrics").items()}
        group.stop()
    time.sleep(max(0.0, args.retention + 5))
    after = redis_figures(private)
    deadline = time.monotonic() + 60
    while (after[1] > baseline[1] or after[0] > baseline[0] + MEMORY_SLACK) and time.monotonic() < deadline:
        time.sleep(2)  # Redis expires keys actively, a sample at a time
        after = redis_figures(private)

    left = leftover_keys(private, baseline_keys, run_ids)
    done = executions(calls)
    expected = {(run_id, node_id) for run_id in run_ids for node_id in soak_nodes.node_ids()}
    missing = expected - set(done)
    twice = sum(1 for count in done.values() if count > 1)
    passes = counters.get("reconcile|quiet", 0) + counters.get("reconcile|active", 0)
    resent = counters.get("republished|", 0)
    mib = 1024 * 1024
    print(f"runs started {len(run_ids)} over {elapsed:.0f} s (target {args.rate}/s), nodes due {len(expected)}; "
          f"starts tried again {retried}")
    print(f"runs final {sum(statuses.values())}: {dict(statuses)}; still running {len(pending)}")
    print(f"node executions {sum(done.values())}: missing {len(missing)}, run twice {twice}")
    print(f"worker RSS (2 workers + pool children, {len(rss)} samples): first {rss[0] / mib:.1f} MiB, "
          f"last {rss[-1] / mib:.1f} MiB, max {max(rss) / mib:.1f} MiB")
    tenths = [rss[min(len(rss) - 1, len(rss) * i // 10)] for i in range(11)]
    print("worker RSS at each tenth of the run (MiB): " + ", ".join(f"{value / mib:.1f}" for value in tenths))
    print(f"Redis used_memory / keys: baseline {baseline[0] / mib:.2f} MiB / {baseline[1]}, "
          f"end of runs {at_end[0] / mib:.2f} MiB / {at_end[1]}, after retention {after[0] / mib:.2f} MiB / {after[1]}")
    for pattern, (count, ttl) in sorted(left.items(), key=lambda item: -item[1][0])[:8]:
        print(f"  left after retention: {count} x {pattern} (TTL {ttl} s)")
    if args.purge_every > 0:
        print(f"finished runs purged from Cosmos while running (the emulator's missing TTL): {purger.purged}, "
              f"failed purge rounds {purger.failures}")
    print(f"reconcile passes {passes} (active {counters.get('reconcile|active', 0)}), re-sent {resent}")
    checks = {
        "every run completed": statuses.get("completed", 0) == len(run_ids),
        "each node executed once": not missing and not twice,
        "Redis back to its baseline": after[1] <= baseline[1] and after[0] <= baseline[0] + MEMORY_SLACK,
        "reconcile ran and re-sent nothing": passes > 0 and resent == 0,
    }
    for name, held in checks.items():
        print(f"{'PASS' if held else 'FAIL'} {name}")
    return all(checks.values())


def main() -> None:
    """Parse the options, set up a private deployment, soak, clean up."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2000, help="node executions in all (10 per run)")
    parser.add_argument("--rate", type=float, default=1.0, help="runs started per second")
    parser.add_argument("--retention", type=float, default=30.0, help="seconds a finished run is kept")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between worker RSS samples")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for runs after the last start")
    parser.add_argument("--purge-every", type=float, default=20.0,
                        help="seconds between purges of finished runs past the retention (0: none)")
    parser.add_argument("--shared-emulators", action="store_true",
                        help="use the dev services' Azurite and Cosmos emulator instead of private ones")
    args = parser.parse_args()
    for name, value in devservices.env_vars(devservices.Ports.from_env()).items():
        os.environ.setdefault(name, value)
    tag = f"sk-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    emulators = None if args.shared_emulators else PrivateEmulators(work / "emulators")
    if emulators is not None:
        os.environ.update(emulators.start())
    conn_str = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    private = PrivateRedis(work / "redis.log")
    env = {"FLOWCRAFT_QUEUE_PREFIX": f"{tag}-", "FLOWCRAFT_KEY_PREFIX": f"{tag}:", "FLOWCRAFT_COSMOS_DATABASE": tag,
           "REDIS_URL": private.url(0), "FLOWCRAFT_RETENTION_DAYS": repr(args.retention / 86400),
           "FLOWCRAFT_RECONCILE_INTERVAL": "5", "FLOWCRAFT_CONFIG_MODULE": "bench.soak_config",
           "BENCH_SOAK_RESULT_EXPIRES": str(args.retention),
           "FLOWCRAFT_NODE_MODULES": "bench.soak_nodes", "FLOWCRAFT_BLUEPRINTS": "bench.soak_nodes:blueprints",
           "BENCH_SOAK_CALLS": str(work / "calls.txt"), "PYTHONPATH": str(ROOT)}
    os.environ.update(env)
    passed = False
    try:
        passed = soak(args, env, work, redis.Redis.from_url(private.url(0)))
    finally:
        private.stop()
        if emulators is not None:
            emulators.stop()
        else:
            _delete_queues(conn_str, f"{tag}-")
            with contextlib.suppress(Exception):
                from flowcraft_celery.stores.cosmos_client import get_client
                get_client().delete_database(tag)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
