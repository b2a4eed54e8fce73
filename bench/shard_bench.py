"""Shard benchmark (issue 22): node throughput when one Azure queue is the limit, on 1 and on 4 shards.

    .venv/bin/python -W ignore bench/shard_bench.py                 # R = 5 requests/s per queue
    .venv/bin/python -W ignore bench/shard_bench.py --rate 10 --runs 40

The fault proxy (`flowcraft_celery/devtools/faultproxy.py`) limits every node queue of the
deployment to R requests per second (sends, receives, deletes: what Azure's per-queue target
counts, scaled down) and answers 503 ServerBusy beyond it, as Azure does. For each shard count
(FLOWCRAFT_QUEUE_SHARDS = 1, then 4), fresh workers (2 processes, prefork -c 2) and a fresh client
with that setting start `--runs` runs of start -> 10 parallel no-op nodes -> join -> end at once and
wait for all of them; printed: nodes/s, node queue requests per node and 503 answers (as the proxy
saw them), runs completed, and nodes run more than once. Target: 4 shards reach at least 3x the
nodes/s of 1 shard. Needs the dev services; uses its own proxy, queues, key prefix and database.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.throttle_bench import start_proxy  # noqa: E402
from bench.workflow_bench import _delete_queues  # noqa: E402
from flowcraft_celery.devtools import background, devservices  # noqa: E402
from flowcraft_celery.devtools.faultproxy import FaultPlan, ProxyControl, proxied_env  # noqa: E402
from transports.azurequeue.naming import azure_queue_name  # noqa: E402

WIDTH = 10
NODES_PER_RUN = WIDTH + 3
SHARD_COUNTS = (1, 4)
TARGET = 3.0


def measure(shards: int, env: dict[str, str], work: Path, control: ProxyControl, rate: float, runs: int,
            tag: str) -> dict[str, float]:
    """One shard count: fresh workers and client, `runs` runs at once under the per-queue limit."""
    from kombu import pools

    import celeryconfig
    from bench import load_nodes, workflow_nodes
    from bench.load_bench import _executions
    from flowcraft_celery.devtools.workers import WorkerGroup
    from flowcraft_celery.distributed.app import create_app
    from flowcraft_celery.distributed.client import Client
    from flowcraft_celery.distributed.core import runtime
    from flowcraft_celery.distributed.core.shards import shard_names

    stats_dir = work / f"stats-{shards}"
    stats_dir.mkdir()
    shard_env = {**env, "FLOWCRAFT_QUEUE_SHARDS": str(shards), "BENCH_STATS_DIR": str(stats_dir)}
    os.environ.update(shard_env)
    importlib.reload(celeryconfig)
    runtime.reset_runtimes()
    pools.reset()
    client = Client(create_app())
    queues = {azure_queue_name(name, ""): rate for name in shard_names(tag, shards)}
    with WorkerGroup(shard_env, work / f"workers-{shards}", cwd=ROOT) as group:
        for _ in range(2):
            group.worker(concurrency=2)
        group.wait_ready(120)
        client.wait(client.start(load_nodes.LOAD_ID).run_id, 300, interval=0.5)  # warm up, unlimited
        time.sleep(2 * workflow_nodes.STATS_PERIOD + 0.1)
        before = _executions(stats_dir)
        control.set_plan(FaultPlan(queue_rates=queues))
        control.reset_stats()
        started = time.monotonic()
        run_ids = [client.start(load_nodes.LOAD_ID).run_id for _ in range(runs)]
        docs = [client.wait(r, 1800, interval=1.0) for r in run_ids]
        elapsed = time.monotonic() - started
        stats = control.stats()
        control.set_plan(FaultPlan())
        rt = client.runtime
        finished = sum(rt.ledger.finished_count(r) for r in run_ids)
        time.sleep(2 * workflow_nodes.STATS_PERIOD + 0.1)
        executions = _executions(stats_dir) - before
    nodes = NODES_PER_RUN * runs
    node_requests = sum(stats["forwarded_by_queue"].get(q, 0) for q in queues)
    limited = sum(n for kind, n in stats.get("limited", {}).items() if kind.startswith("queue/"))
    figures = {"shards": shards, "seconds": elapsed, "nodes_per_s": nodes / elapsed,
               "completed": sum(1 for d in docs if d.get("status") == "completed"),
               "finished": finished, "twice": max(0, executions - nodes), "requests_per_node": node_requests / nodes,
               "limited": limited}
    print(f"{shards} shard(s): {runs} runs ({nodes} nodes) in {elapsed:.1f} s = {figures['nodes_per_s']:.1f} nodes/s; "
          f"{figures['completed']}/{runs} completed, {finished} node executions finished, "
          f"{figures['twice']} no-op bodies run beyond one per node; node queue requests/node "
          f"{figures['requests_per_node']:.2f}; {limited} answered 503 by the per-queue limit", flush=True)
    return figures


def main() -> None:
    """Measure 1 and 4 shards under the same per-queue limit in one run; print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=5.0, help="requests/s each node queue may take (R)")
    parser.add_argument("--runs", type=int, default=30, help="runs started at once per shard count")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shard-bench-"))
    _, ports = start_proxy(work / "proxy")
    control = ProxyControl(ports["queue"])
    tag = f"sb-{uuid.uuid4().hex[:8]}"
    base = devservices.env_vars(devservices.Ports.from_env())
    direct = {**base, **{k: v for k, v in os.environ.items() if k in base}}
    env = {**proxied_env(direct, ports),
           "FLOWCRAFT_DEFAULT_QUEUE": tag, "FLOWCRAFT_KEY_PREFIX": f"{tag}:", "FLOWCRAFT_COSMOS_DATABASE": tag,
           "FLOWCRAFT_NODE_MODULES": "bench.workflow_nodes", "FLOWCRAFT_BLUEPRINTS": "bench.load_nodes:blueprints",
           "BENCH_LOAD_WIDTH": str(WIDTH), "FLOWCRAFT_TASK_EVENTS": "false", "PYTHONPATH": str(ROOT)}
    rows = []
    try:
        for shards in SHARD_COUNTS:
            rows.append(measure(shards, env, work, control, args.rate, args.runs, tag))
    finally:
        _delete_queues(direct["AZURE_STORAGE_CONNECTION_STRING"], tag)
        with contextlib.suppress(Exception):  # through the proxy, still running
            from flowcraft_celery.stores.cosmos_client import get_client

            get_client().delete_database(tag)
        background.stop(work / "proxy", "faultproxy", "faultproxy_cli")
    one, four = rows[0], rows[-1]
    ratio = four["nodes_per_s"] / one["nodes_per_s"]
    print(f"\nper-queue limit R = {args.rate:g} requests/s; {args.runs} runs of start -> {WIDTH} parallel -> "
          "join -> end")
    print(f"{'shards':>6} {'seconds':>8} {'nodes/s':>8} {'queue req/node':>14} {'503s':>6} {'completed':>9} "
          f"{'run twice':>9}")
    for row in rows:
        print(f"{row['shards']:>6} {row['seconds']:>8.1f} {row['nodes_per_s']:>8.1f} {row['requests_per_node']:>14.2f} "
              f"{row['limited']:>6} {row['completed']:>9} {row['twice']:>9}")
    every_run = all(row["completed"] == args.runs and not row["twice"] for row in rows)
    print(f"\n  {'PASS' if ratio >= TARGET else 'MISS'} {four['shards']} shards make {ratio:.2f}x the nodes/s of one "
          f"(>= {TARGET:g})")
    print(f"  {'PASS' if every_run else 'MISS'} every run completed, each node once, on every shard count")
    print(f"logs: {work}")


if __name__ == "__main__":
    main()
