"""Throttling benchmark: what Azure's "no" costs a workflow, through the fault proxy.

For each throttling rate (default 0 %, 5 %, 20 %: that share of queue requests answered 503
ServerBusy and of Cosmos requests 429 with x-ms-retry-after-ms 100), `--runs` concurrent runs of an
11-node fan-out/fan-in (start -> 6 parallel nodes writing context -> join -> chain of 3) on one
worker (-c 2) and beat; prints nodes/s, requests per node by kind (as the proxy saw them: workers,
beat and the starting client), and extra requests per throttled request (requests beyond the
unthrottled row's per node, divided by the throttled answers: 1.0 means each throttled request cost
exactly one retry, no storm). The benchmark's own status polling while it waits is not counted.

    python bench/throttle_bench.py                 # dev services (flowcraft-celery services up)
    python bench/throttle_bench.py --sdk-default   # also the Storage SDK's own retry (15 s back-off)

Needs the dev services; talks to them through its own fault proxy on free loopback ports, with its
own queue, key prefix and database. `make bench-throttle` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flowcraft_celery.devtools import background, devservices  # noqa: E402
from flowcraft_celery.devtools.faultproxy import FaultPlan, ProxyControl, Rule, proxied_env  # noqa: E402

NODES = "tests.integration.faults.fault_nodes"
BLUEPRINT = "ft-fan"
NODES_PER_RUN = 11


def start_proxy(folder: Path) -> tuple[int, dict[str, int]]:
    ports_file = folder / "ports.json"
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
            "from flowcraft_celery.devtools.faultproxy_cli import fault_proxy_command; fault_proxy_command()")
    pid = background.start(folder, "faultproxy", [sys.executable, "-c", code, "--ports-file", str(ports_file)])
    deadline = time.monotonic() + 30
    while not ports_file.exists():
        if time.monotonic() > deadline or not background.alive(pid):
            log = background.log_path(folder, "faultproxy")
            raise SystemExit(f"fault proxy did not start: {background.log_tail(log)}")
        time.sleep(0.1)
    time.sleep(0.1)
    return pid, json.loads(ports_file.read_text())


def kinds_text(counts: Counter[str], nodes: int) -> str:
    top = [(k, n) for k, n in counts.most_common() if n / nodes >= 0.05]
    return " ".join(f"{k}={n / nodes:.2f}" for k, n in top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="0,0.05,0.2", help="throttling shares to measure, comma-separated")
    parser.add_argument("--runs", type=int, default=10, help="concurrent runs per rate")
    parser.add_argument("--sdk-default", action="store_true",
                        help="also measure the highest rate with the Storage SDK's default back-off (15 s)")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    work = Path(tempfile.mkdtemp(prefix="throttle-bench-"))
    _, ports = start_proxy(work / "proxy")
    control = ProxyControl(ports["queue"])
    tag = f"tb-{uuid.uuid4().hex[:8]}"
    base = devservices.env_vars(devservices.Ports.from_env())
    env = {**proxied_env({**base, **{k: v for k, v in os.environ.items() if k in base}}, ports),
           "FLOWCRAFT_DEFAULT_QUEUE": tag, "FLOWCRAFT_KEY_PREFIX": f"{tag}:", "FLOWCRAFT_COSMOS_DATABASE": tag,
           "FLOWCRAFT_NODE_MODULES": NODES, "FLOWCRAFT_BLUEPRINTS": f"{NODES}:blueprints",
           "FLOWCRAFT_TASK_EVENTS": "false", "FLOWCRAFT_RECONCILE_INTERVAL": "5",
           "FAULT_CALLS_FILE": str(work / "calls.txt"), "PYTHONPATH": str(ROOT)}
    scenarios = [(rate, "configured") for rate in rates]
    if args.sdk_default:
        scenarios.append((max(rates), "sdk-default"))
    rows = []
    try:
        from flowcraft_celery.devtools.workers import WorkerGroup

        baseline: float | None = None
        for rate, policy in scenarios:
            extra_env = {} if policy == "configured" else {
                "FLOWCRAFT_STORAGE_RETRY_BACKOFF": "15", "FLOWCRAFT_STORAGE_RETRY_MAX_BACKOFF": "30",
                "FLOWCRAFT_STORAGE_RETRY_TOTAL": "3"}
            os.environ.update({**env, **extra_env})
            import importlib

            from kombu import pools

            import celeryconfig
            from flowcraft_celery.distributed.app import create_app
            from flowcraft_celery.distributed.client import Client
            from flowcraft_celery.distributed.core import runtime
            from flowcraft_celery.distributed.runs.errors import StartError
            from flowcraft_celery.stores.cosmos_client import request_counts
            importlib.reload(celeryconfig)
            runtime.reset_runtimes()
            pools.reset()
            client = Client(create_app())
            with WorkerGroup({**env, **extra_env}, work / f"workers-{rate}-{policy}", cwd=ROOT) as group:
                group.worker(concurrency=2)
                group.beat()
                group.wait_ready(90)
                client.start(BLUEPRINT, {})  # warm up: queues, containers, connections
                time.sleep(3)
                plan = FaultPlan(rules=(Rule.parse(f"queue=503@{rate}"), Rule.parse(f"cosmos=429@{rate}")),
                                 retry_after_ms=100) if rate else FaultPlan()
                control.set_plan(plan)
                control.reset_stats()
                started = time.monotonic()
                runs, start_failures = [], 0
                for _ in range(args.runs):
                    try:
                        runs.append(client.start(BLUEPRINT, {}).run_id)
                    except StartError as exc:  # what the SDK's own 15 s back-off does to `start`
                        start_failures += 1
                        print(f"  {exc}", flush=True)
                polled = request_counts()  # the bench's own status polling is not the workflow's cost
                docs = [client.wait(r, 900, interval=0.25) for r in runs]
                polling = Counter(request_counts())
                polling.subtract(polled)
                elapsed = time.monotonic() - started
                stats = control.stats()
                control.set_plan(FaultPlan())
                # recovery: the same processes, right after the episode, unthrottled
                again = time.monotonic()
                for run_id in [client.start(BLUEPRINT, {}).run_id for _ in range(args.runs)]:
                    client.wait(run_id, 900, interval=0.25)
                recovered = NODES_PER_RUN * args.runs / (time.monotonic() - again)
            nodes = NODES_PER_RUN * len(runs)
            failed = sum(1 for d in docs if d["status"] != "completed") + start_failures
            calls = [line.split()[0] for line in (work / "calls.txt").read_text().splitlines()]
            executions = sum(1 for c in calls if c in set(runs))  # the throttled batch only
            requests = Counter(stats["requests"])
            requests.subtract({f"cosmos/{kind}": n for kind, n in polling.items()})
            requests = +requests
            throttled = sum(stats["injected"].values())
            total = sum(requests.values())
            if baseline is None:
                baseline = total / nodes
            extra = (total - baseline * nodes) / throttled if throttled else 0.0
            queue_kinds = Counter({k: v for k, v in requests.items() if k.startswith("queue/")})
            cosmos_kinds = Counter({k: v for k, v in requests.items() if k.startswith("cosmos/")})
            rows.append((rate, policy, elapsed, nodes / elapsed, total / nodes, throttled, extra, failed,
                         executions - nodes, recovered, kinds_text(queue_kinds, nodes),
                         kinds_text(cosmos_kinds, nodes)))
            print(f"rate {rate:.0%} ({policy}): {args.runs} runs in {elapsed:.1f} s, {nodes / elapsed:.1f} nodes/s, "
                  f"{total / nodes:.2f} requests/node, {throttled} throttled, {extra:.2f} extra/throttled, "
                  f"failed {failed}, extra executions {executions - nodes}; then unthrottled {recovered:.1f} nodes/s",
                  flush=True)
    finally:
        background.stop(work / "proxy", "faultproxy", "faultproxy_cli")
    print()
    print(f"{'throttled':>9} {'retry':>11} {'time s':>7} {'nodes/s':>8} {'req/node':>8} {'throttled':>9} "
          f"{'extra/thr':>9} {'failed':>6} {'re-runs':>7} {'after':>7}")
    for rate, policy, elapsed, nps, rpn, throttled, extra, failed, reruns, recovered, _, _ in rows:
        print(f"{rate:>9.0%} {policy:>11} {elapsed:>7.1f} {nps:>8.1f} {rpn:>8.2f} {throttled:>9} {extra:>9.2f} "
              f"{failed:>6} {reruns:>7} {recovered:>7.1f}")
    print("(after: nodes/s of the next, unthrottled batch in the same processes: throughput recovers)")
    print("\nrequests per node by kind:")
    for rate, policy, *_, queue_kinds, cosmos_kinds in rows:
        print(f"  {rate:.0%} {policy}: {queue_kinds}\n  {'':>{len(f'{rate:.0%} {policy}')}}  {cosmos_kinds}")


if __name__ == "__main__":
    main()
